"""The feedback store fails underneath a real `bentoml serve` (issue 18), each fault for real:
SQLite locked by another process, the store's file system full (a tmpfs this test mounts),
the store folder made immutable, the store unwritable at start, PostgreSQL stopped and
PostgreSQL frozen with SIGSTOP.

For each: /classify keeps answering 200 at its usual speed (predictions are kept in the
background), /feedback answers 503 with a Retry-After and a sentence naming the store, a
correction of a prediction made during the fault is never a false 404, no worker dies, the
log says it once (not once per request), and the service recovers by itself.
Bounded: a few seconds of fault each, loopback only; marked slow.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.faults import fill, lock_sqlite, set_immutable, small_tmpfs
from support.images import image_bytes
from support.postgres import PostgresCluster, postgres_cluster
from support.service import (
    REPO,
    ServedService,
    import_into_store,
    serve,
    shared_model_dir,
    store_env,
)
from support.worker import worker_pids

from kitchenware.serving.feedback.storefaults import STORE_DEADLINE_S

pytestmark = [pytest.mark.slow]
FAST_S = 2.0  # a /classify on the colour model takes ~0.1 s; a blocked one took the fault's
LABELS = ["cup", "glass", "plate", "spoon", "fork", "knife"]


@contextlib.contextmanager
def served_store(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, **settings: str
) -> Iterator[ServedService]:
    home = tmp_path / "home"
    import_into_store(shared_model_dir(tmp_path_factory.getbasetemp()), home)
    # Two workers: both must survive the store's faults without a restart.
    env = store_env(home, monitoring_dir=tmp_path / "monitoring", workers="2", overrides=settings)
    with serve("service:Kitchenware", env, cwd=REPO, log_dir=tmp_path) as server:
        yield server


def classify(server: ServedService, n: int) -> tuple[int, str, float]:
    started = time.monotonic()
    answer = httpx.post(
        f"{server.url}/classify",
        files={"image": ("p.png", image_bytes((n * 37 % 256, n * 11 % 256, 90)))},
        timeout=60,
    )
    return answer.status_code, answer.headers.get("x-request-id", ""), time.monotonic() - started


def correct(server: ServedService, request_id: str, n: int = 0) -> httpx.Response:
    return httpx.post(
        f"{server.url}/feedback",
        files={"request_id": (None, request_id), "label": (None, LABELS[n % 6])},
        timeout=60,
    )


def correct_with_photo(server: ServedService, n: int) -> httpx.Response:
    photo = image_bytes((n % 256, 200, 17), size=(31, 29))
    return httpx.post(
        f"{server.url}/feedback",
        files={"image": ("p.png", photo), "label": (None, "cup")},
        timeout=60,
    )


def assert_unavailable(answer: httpx.Response, cause: str = "") -> None:
    """503, a Retry-After, and a sentence naming the store and the cause (with `cause` in it)."""
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert answer.headers["retry-after"] == str(body["retry_after_s"])
    assert body["reason"] == "feedback_store_unavailable"
    assert "feedback store" in body["error"] and "retry in" in body["error"]
    assert cause in body["error"]
    print(f"\n503: {body['error']}")  # the sentences quoted in the README's fault table


def classify_during(server: ServedService, count: int) -> list[str]:
    """`count` predictions while the fault holds: all 200, none slowed by the store."""
    ids = []
    for n in range(count):
        status, request_id, elapsed = classify(server, n)
        assert status == 200 and elapsed < FAST_S, (status, elapsed)
        ids.append(request_id)
    return ids


def correct_until_answered(
    server: ServedService, request_id: str, n: int, until: float
) -> httpx.Response:
    """What a client does with a 503 + Retry-After: try again (each worker re-opens the
    store on its own, within RETRY_AFTER_S)."""
    while True:
        answer = correct(server, request_id, n)
        if answer.status_code != 503 or time.monotonic() > until:
            return answer
        time.sleep(1)


def assert_recovered(server: ServedService, made_during: list[str], timeout: float = 30) -> None:
    """A new prediction is corrected (no restart); the ones made during the fault are kept
    (200) or said to be not kept (409), never 404."""
    until = time.monotonic() + timeout
    while True:  # a fresh prediction, corrected by id: each worker re-opens on its own
        _, request_id, _ = classify(server, 99)
        answer = correct(server, request_id)
        if answer.status_code == 200 or time.monotonic() > until:
            break
        time.sleep(1)
    assert answer.status_code == 200, answer.text
    for n, made in enumerate(made_during):
        answer = correct_until_answered(server, made, n, until)
        assert answer.status_code in (200, 409), answer.text
        if answer.status_code == 409:
            assert answer.json()["reason"] == "prediction_not_kept", answer.text
            assert "not kept (" in answer.json()["error"]


def fault_lines(server: ServedService) -> int:
    return server.log().count("is failing (")


def test_sqlite_locked_by_another_process(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    db = tmp_path / "store" / "feedback.db"
    with served_store(tmp_path, tmp_path_factory, feedback_url=f"sqlite:///{db}") as server:
        _, before, _ = classify(server, 1)
        time.sleep(0.5)
        locker = lock_sqlite(db)
        try:
            made_during = classify_during(server, 8)
            started = time.monotonic()
            assert_unavailable(correct(server, before))
            assert time.monotonic() - started < STORE_DEADLINE_S + 2
            time.sleep(2)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert_recovered(server, made_during)
        assert 1 <= fault_lines(server) <= 4, server.log()[-3000:]  # once per worker and path


def test_a_full_file_system(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with (
        small_tmpfs(tmp_path / "disk", refused=pytest.skip) as disk,
        served_store(
            tmp_path, tmp_path_factory, feedback_url=f"sqlite:///{disk}/feedback.db"
        ) as server,
    ):
        assert correct_with_photo(server, 1).status_code == 200
        filler = fill(disk)
        try:
            made_during = classify_during(server, 8)
            time.sleep(1)  # the background writer meets the full disk
            assert_unavailable(correct_with_photo(server, 2))
            for request_id in made_during[:2]:
                answer = correct(server, request_id)
                assert answer.status_code in (409, 503), answer.text  # not kept / retry; no 404
        finally:
            filler.unlink()
        assert_recovered(server, made_during)
        assert 1 <= fault_lines(server) <= 4, server.log()[-3000:]


def test_an_immutable_store_folder_kills_no_worker(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = tmp_path / "store"
    with served_store(
        tmp_path, tmp_path_factory, feedback_url=f"sqlite:///{store}/fb.db"
    ) as server:
        assert correct_with_photo(server, 1).status_code == 200
        workers = worker_pids(server)
        set_immutable(store, True, recursive=True)
        try:
            made_during = classify_during(server, 8)
            time.sleep(1)
            # SQLite may say "disk I/O error" here: the sentence must still point at the folder
            assert_unavailable(correct_with_photo(server, 2), cause="folder")
            made_during += classify_during(server, 4)
            assert worker_pids(server) == workers  # no SIGBUS, no restart
        finally:
            set_immutable(store, False, recursive=True)
        assert_recovered(server, made_during)
        assert worker_pids(server) == workers


def test_a_store_unwritable_at_start_is_tried_again(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    set_immutable(store, True)
    try:
        with served_store(
            tmp_path, tmp_path_factory, feedback_url=f"sqlite:///{store}/fb.db"
        ) as server:
            assert_unavailable(correct_with_photo(server, 1))
            made_during = classify_during(server, 4)
            set_immutable(store, False)
            assert_recovered(server, made_during)
    finally:
        subprocess.run(["chattr", "-i", str(store)], check=False)


@pytest.fixture
def postgres(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServedService, PostgresCluster]]:
    """A served instance on a fresh PostgreSQL that has taken one correction."""
    with postgres_cluster() as cluster:
        settings = {"feedback_url": cluster.url, "feedback_images_dir": str(tmp_path / "images")}
        with served_store(tmp_path, tmp_path_factory, **settings) as server:
            assert correct_with_photo(server, 1).status_code == 200
            yield server, cluster


@pytest.mark.postgres
def test_postgres_stopped_then_started(postgres: tuple[ServedService, PostgresCluster]) -> None:
    server, cluster = postgres
    cluster.stop()
    made_during = classify_during(server, 8)
    time.sleep(1)
    for n in range(6):  # each a prompt 503, and no flood of log lines
        started = time.monotonic()
        assert_unavailable(correct_with_photo(server, 10 + n))
        assert time.monotonic() - started < STORE_DEADLINE_S
    cluster.start()
    assert_recovered(server, made_during)
    assert 1 <= fault_lines(server) <= 4, server.log()[-3000:]
    assert len(server.log().splitlines()) < 400


@pytest.mark.postgres
def test_postgres_frozen_holds_no_request(postgres: tuple[ServedService, PostgresCluster]) -> None:
    server, cluster = postgres
    cluster.signal(signal.SIGSTOP)
    try:
        made_during = classify_during(server, 8)
        started = time.monotonic()
        assert_unavailable(correct_with_photo(server, 2))
        assert time.monotonic() - started < STORE_DEADLINE_S + 3
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200  # the model
    finally:
        cluster.signal(signal.SIGCONT)
    assert_recovered(server, made_during)
