"""Durability of /feedback: 8 clients send corrections, the server is killed with SIGKILL
mid-stream, restarted on the same store, and every acknowledged correction is there
(0 lost) with its photo. Once with the default SQLite file, once with a real PostgreSQL
server started on loopback for the test."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.images import image_bytes
from support.postgres import postgres_server
from support.service import REPO, import_into_store, serve, shared_model_dir, store_env

from kitchenware.localserver import descendants, process_table
from kitchenware.serving.feedback.store import FeedbackStore

pytestmark = [pytest.mark.slow]
SERVICE_DIR = REPO  # service.py of this checkout
CLIENTS = 8
KILL_AFTER_ACKS = 40
LABELS = ["cup", "glass", "plate", "spoon", "fork", "knife"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {"feedback_url": f"sqlite:///{tmp_path / 'store' / 'feedback.db'}"}
        return
    with postgres_server() as url:
        yield {"feedback_url": url, "feedback_images_dir": str(tmp_path / "images")}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def send_until_stopped(
    url: str,
    client: int,
    acked: list[tuple[int, str]],
    stop: threading.Event,
    errors: list[str],
) -> None:
    with httpx.Client(timeout=30) as http:
        for i in range(10_000):
            if stop.is_set():
                return
            photo = image_bytes(
                (client * 30 % 256, i % 256, (i // 256) % 256), "PNG", size=(24 + client, 20)
            )
            try:
                answer = http.post(
                    f"{url}/feedback",
                    files={"image": ("p.png", photo), "label": (None, LABELS[i % 6])},
                )
            except httpx.HTTPError:
                return  # the server is gone: what was acknowledged so far is what counts
            if answer.status_code == 200:
                acked.append((answer.json()["feedback_id"], hashlib.sha256(photo).hexdigest()))
            elif answer.status_code != 409:  # 409: same colour drawn twice; not an ack
                errors.append(f"{answer.status_code} {answer.text[:300]}")
                return


def test_acknowledged_feedback_survives_sigkill(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, store_settings: dict[str, str]
) -> None:
    home = tmp_path / "home"
    import_into_store(shared_model_dir(tmp_path_factory.getbasetemp()), home)
    # Two workers: two processes write the store at once when the server is killed.
    env = store_env(
        home, monitoring_dir=tmp_path / "monitoring", workers="2", overrides=store_settings
    )
    acked: list[tuple[int, str]] = []
    errors: list[str] = []
    stop = threading.Event()
    with serve("service:Kitchenware", env, cwd=SERVICE_DIR, log_dir=tmp_path) as first:
        threads = [
            threading.Thread(target=send_until_stopped, args=(first.url, c, acked, stop, errors))
            for c in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(acked) < KILL_AFTER_ACKS and time.monotonic() < deadline:
            time.sleep(0.01)
        # Mid-stream, 8 requests in flight: the arbiter and every worker at once (BentoML's
        # workers leave the process group, so a killpg alone would leave them serving).
        tree = descendants(process_table(), first.process.pid)
        for pid in tree:
            os.kill(pid, signal.SIGKILL)
        killed_at = len(acked)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        # SIGKILL lands once a process leaves an uninterruptible call (an fsync on a loaded
        # disk): give it a few seconds rather than expect it dead at once.
        deadline = time.monotonic() + 15
        while any(pid_alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in tree if pid_alive(pid)], first.log()[-2000:]
        first.process.wait(timeout=30)
    assert errors == [], errors  # every answer before the kill was a 200 (or a 409)
    assert killed_at >= KILL_AFTER_ACKS, first.log()[-3000:]
    assert len(acked) - killed_at <= CLIENTS  # nothing acknowledged after the kill but in-flight

    with serve("service:Kitchenware", env, cwd=SERVICE_DIR, log_dir=tmp_path) as second:
        again = httpx.post(
            f"{second.url}/feedback",
            files={"image": ("n.png", image_bytes((1, 2, 3))), "label": (None, "cup")},
            timeout=30,
        )
        assert again.status_code == 200, again.text
    store = FeedbackStore(
        store_settings["feedback_url"], store_settings.get("feedback_images_dir") or None
    )
    try:
        stored = {r.id: r for r in store.feedback_records()}
        lost = [(i, sha) for i, sha in acked if i not in stored or stored[i].image_sha256 != sha]
        photos_missing = [
            i
            for i, _ in acked
            if i in stored
            and not store.image_path(stored[i].image_sha256, stored[i].image_ext).is_file()
        ]
    finally:
        store.close()
    print(
        f"\n{store_settings['feedback_url'].split(':')[0]}: {len(acked)} acknowledged "
        f"({killed_at} at the kill), {len(stored)} stored after restart, "
        f"{len(lost)} lost, {len(photos_missing)} photos missing"
    )
    assert lost == [] and photos_missing == []
    assert len(stored) >= len(acked) + 1  # the in-flight ones may land too; never fewer
