"""Bounds a user only notices when they bite, on a real `bentoml serve` (the colour model,
one worker, a SQLite store in a temp folder, loopback):

- disk: with a tiny size bound, the photo folder and the prediction log stay under it after
  many predictions, the oldest go first, a metric counts what was removed, and a correction
  already acknowledged keeps its photo; a correction by id of a prediction whose photo went
  hears why;
- headers that never finish: a connection that sends its request headers a byte a second,
  or nothing at all, is closed (408 when a request had begun) soon after the header
  deadline, while ordinary requests keep getting 200.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from support.service import (
    REPO,
    ServedService,
    import_into_store,
    serve,
    shared_model_dir,
    store_env,
)

pytestmark = [pytest.mark.slow]

PHOTO_SIDE = 48  # a noise PNG of 48x48 is ~7 KB: the bound below holds about 14 of them
IMAGES_MAX_MB = 0.1
LOG_MAX_MB = 0.01  # ~15 records of ~700 bytes
PREDICTIONS = 40
HEADER_TIMEOUT_S = 3.0
SLACK_S = 3.0  # a loaded 2-core machine: the event loop may be late by this much


def noise_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (PHOTO_SIDE, PHOTO_SIDE, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedService]:
    base = tmp_path_factory.mktemp("bounds")
    home = base / "home"
    import_into_store(shared_model_dir(tmp_path_factory.getbasetemp()), home)
    env = store_env(
        home,
        monitoring_dir=base / "monitoring",
        feedback_url=f"sqlite:///{base / 'store' / 'feedback.db'}",
        workers="1",
        feedback_images_max_mb=str(IMAGES_MAX_MB),
        prediction_log_max_mb=str(LOG_MAX_MB),
        header_timeout_s=str(HEADER_TIMEOUT_S),
    )
    with serve("service:Kitchenware", env, cwd=REPO, log_dir=base) as served:
        served.extra["base"] = base
        yield served


def classify(server: ServedService, data: bytes) -> str:
    answer = httpx.post(f"{server.url}/classify", files={"image": ("p.png", data)}, timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["request_id"])


def correct(server: ServedService, request_id: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/feedback", json={"request_id": request_id, "label": "plate"}, timeout=30
    )


def removed(server: ServedService) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        (sample.labels["kind"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "kitchenware_disk_removed_total"
    }


def photo_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_the_photo_folder_and_the_prediction_log_stay_under_their_size_bounds(
    server: ServedService,
) -> None:
    base = Path(str(server.extra["base"]))
    images, log_dir = base / "store" / "images", base / "monitoring" / "kitchenware_predictions"
    photos = [noise_png(seed) for seed in range(PREDICTIONS + 1)]
    corrected_id = classify(server, photos[0])
    answer = correct(server, corrected_id)
    for _ in range(20):  # the correction waits for its prediction's background write
        if answer.status_code == 200:
            break
        time.sleep(0.2)
        answer = correct(server, corrected_id)
    assert answer.status_code == 200, answer.text
    ids = [classify(server, photo) for photo in photos[1:]]
    time.sleep(1.0)  # the writer thread keeps the last batch, then checks the bounds

    bound = IMAGES_MAX_MB * 1024 * 1024
    on_disk = folder_bytes(images)
    kept = {path.stem for path in images.rglob("*.png")}
    sha = {request_id: photo_sha(photo) for request_id, photo in zip(ids, photos[1:], strict=True)}
    print(
        f"\nphotos: {sum(map(len, photos)):,} bytes classified, {on_disk:,} on disk "
        f"(bound {bound:,.0f}), {len(kept)} files; log: {folder_bytes(log_dir):,} bytes "
        f"(bound {LOG_MAX_MB * 1024 * 1024:,.0f}); removed: {removed(server)}"
    )
    assert on_disk <= bound
    assert photo_sha(photos[0]) in kept, "the corrected photo must never go"
    assert sha[ids[-1]] in kept and sha[ids[0]] not in kept  # the oldest went first
    first_kept = next(i for i, request_id in enumerate(ids) if sha[request_id] in kept)
    assert all(sha[request_id] in kept for request_id in ids[first_kept:])
    metric = removed(server)
    assert metric.get(("photo", "size"), 0) >= first_kept

    gone = correct(server, ids[0])  # its photo went: the answer says so, and why
    assert gone.status_code == 400 and gone.json()["reason"] == "image_not_kept", gone.text
    assert "KITCHENWARE_FEEDBACK_IMAGES_MAX_MB" in gone.json()["error"], gone.text
    assert correct(server, ids[-1]).status_code == 200

    log_bound = LOG_MAX_MB * 1024 * 1024
    assert folder_bytes(log_dir / "data") <= log_bound * 1.2  # + the open file's last batch
    logged = [
        json.loads(line)["kitchenware_request_id"]
        for path in (log_dir / "data").glob("data.*")
        for line in path.read_text().splitlines()
    ]
    assert ids[-1] in logged and ids[0] not in logged  # the oldest records went first
    assert metric.get(("prediction_log_file", "size"), 0) >= 1


def test_headers_that_never_finish_are_cut_off_and_others_are_served(
    server: ServedService,
) -> None:
    slow = []
    for _ in range(20):
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        connection.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\n")
        connection.setblocking(False)
        slow.append(connection)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    opened = time.monotonic()
    closed_after: dict[int, float] = {}
    answers: list[bytes] = []
    statuses = []
    while len(closed_after) < len(slow) and time.monotonic() - opened < HEADER_TIMEOUT_S + 15:
        for index, connection in enumerate(slow):
            if index in closed_after:
                continue
            try:
                data = connection.recv(4096)
            except BlockingIOError:
                connection.send(b"x")  # one header byte at a time, never the blank line
                continue
            except ConnectionError:
                data = b""
            closed_after[index] = time.monotonic() - opened
            answers.append(data)
        statuses.append(
            httpx.post(
                f"{server.url}/classify", files={"image": ("p.png", noise_png(7))}, timeout=30
            ).status_code
        )
        time.sleep(0.5)
    silent.settimeout(SLACK_S)
    try:
        silent_end: bytes | None = silent.recv(100)  # b"" once the server closes it
    except TimeoutError:
        silent_end = None
    silent_after = time.monotonic() - opened
    for connection in [*slow, silent]:
        connection.close()

    print(f"\nslow headers closed after {sorted(closed_after.values())} s; others: {statuses}")
    assert len(closed_after) == len(slow), "connections still open past the header deadline"
    assert max(closed_after.values()) <= HEADER_TIMEOUT_S + SLACK_S
    for data in answers:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), data[:200]
        assert json.loads(body)["reason"] == "header_timeout"
    assert silent_end == b"" and silent_after <= HEADER_TIMEOUT_S + SLACK_S
    assert statuses and set(statuses) == {200}, statuses


def test_headers_over_the_byte_bound_are_refused_at_once(server: ServedService) -> None:
    """httptools takes a header of any size (73 MB in 10 s, measured): past 64 KiB, a 431."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 80_000)
        answer = connection.recv(4096)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), answer[:200]
    assert json.loads(body)["reason"] == "headers_too_large"
    assert time.monotonic() - started < HEADER_TIMEOUT_S  # at once, not at the deadline
    ordinary = httpx.post(f"{server.url}/classify", files={"image": ("p.png", noise_png(3))})
    assert ordinary.status_code == 200
