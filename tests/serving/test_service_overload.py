"""Real overload: a queue longer than the latency budget is answered 503 "busy, retry"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from support.images import image_bytes
from support.service import build_colour_model, import_into_store, serve, store_env

pytestmark = pytest.mark.slow


def test_overload_answers_503_busy_with_retry_after_and_recovers(tmp_path: Path) -> None:
    home = tmp_path / "bentoml_home"
    # ~50 ms per image on 2 cores, so 48 concurrent requests need seconds, not 200 ms.
    import_into_store(build_colour_model(tmp_path / "slow", 256, busywork_filters=96), home)
    # One worker and admission out of the way: this is the batcher's shedding (503); the
    # admission gate's 429 is tested in test_reliability_served.py.
    env = store_env(home, max_latency_ms="200", retry_after_s="3", workers="1", max_in_flight="100")
    data = image_bytes((230, 20, 20), size=(300, 300))

    async def flood(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{url}/classify", files={"image": ("c.png", data)})
                    for _ in range(48)
                )
            )

    with serve("service:Kitchenware", env, log_dir=tmp_path) as server:
        answers = asyncio.run(flood(server.url))
        after = httpx.post(f"{server.url}/classify", files={"image": ("c.png", data)})
        metrics = httpx.get(f"{server.url}/metrics").text
        log = server.log()

    statuses = sorted({r.status_code for r in answers})
    assert statuses == [200, 503], statuses
    busy = [r for r in answers if r.status_code == 503]
    assert all(r.headers["retry-after"] == "3" for r in busy)
    assert all(r.json()["reason"] == "busy" and "retry" in r.json()["error"].lower() for r in busy)
    assert after.status_code == 200 and after.json()["label"] == "cup"
    assert f"kitchenware_busy_rejections_total {float(len(busy))}" in metrics
    # The model process logs each dropped request; the HTTP front must log no error.
    assert "[ERROR] [entry_service" not in log
