"""Slow clients against a real `bentoml serve`: uploads that trickle in hold no model slot,
are cut off with a 408 past the minimum rate, and ordinary clients keep getting 200.

The server is started as `bentoml serve service.py` (the module form of the entry point,
refused while the module bound the service to two names).
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from support.images import image_bytes
from support.service import import_into_store, serve, shared_model_dir, store_env

pytestmark = pytest.mark.slow

SLOW_CLIENTS = 100
MAX_IN_FLIGHT = 8  # 2 workers x 8 slots: 100 slow uploads would fill them many times over
GRACE_S = 6
BOUNDARY = "slowloris"


def _open_slow_upload(port: int) -> socket.socket:
    """Headers and the start of a multipart body, as a slow-loris client sends them."""
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Content-Length: 100000\r\n\r\n"
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(head)
    return connection


def _answer(connection: socket.socket) -> bytes:
    connection.settimeout(20)
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_uploads_hold_no_slot_and_are_cut_off_with_a_408(tmp_path: Path) -> None:
    home = tmp_path / "bentoml_home"
    import_into_store(shared_model_dir(tmp_path), home)
    env = store_env(
        home,
        workers="2",
        max_in_flight=str(MAX_IN_FLIGHT),
        min_upload_bytes_per_s="1000",
        upload_grace_s=str(GRACE_S),
    )
    photo = image_bytes((230, 20, 20))
    with serve("service.py", env, log_dir=tmp_path) as server:
        opened = time.monotonic()
        slow = [_open_slow_upload(server.port) for _ in range(SLOW_CLIENTS)]

        async def ordinary() -> list[tuple[int, float]]:
            answers = []
            async with httpx.AsyncClient(timeout=30) as client:
                while time.monotonic() - opened < GRACE_S - 1:
                    for connection in slow:  # a trickle: one byte each, well under the rate
                        connection.send(b"\xff")
                    started = time.perf_counter()
                    response = await client.post(
                        f"{server.url}/classify", files={"image": ("c.png", photo)}
                    )
                    answers.append((response.status_code, time.perf_counter() - started))
                    await asyncio.sleep(0.2)
            return answers

        answers = asyncio.run(ordinary())
        statuses = [status for status, _ in answers]
        assert len(statuses) >= 5 and set(statuses) == {200}, statuses
        cut_off = [_answer(connection) for connection in slow]
        elapsed = time.monotonic() - opened
        for connection in slow:
            connection.close()
        log = server.log()

    latencies = sorted(seconds for _, seconds in answers)
    print(
        f"\n{SLOW_CLIENTS} slow uploads open: {len(answers)} ordinary requests, all 200, "
        f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms; cut off after {elapsed:.1f} s"
    )
    for raw in cut_off:
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), raw[:300]
        assert b'"reason":"upload_too_slow"' in body and b"KITCHENWARE_MIN_UPLOAD" in body, body
    assert elapsed < GRACE_S + 20  # cut off soon after the grace period, not at a timeout
    assert "Traceback" not in log, log[-3000:]
