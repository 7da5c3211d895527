"""AdmissionGate on its own: the (N+1)th concurrent request gets a prompt 429 with a retry
sentence and Retry-After, probes pass, and capacity comes back when requests finish."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from kitchenware.serving.http.overload import AdmissionGate, busy_body


class SlowApp:
    """Reads each body as BentoML does, then holds the request until released; counts what
    reached it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.reached = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.reached += 1
        if scope["path"] == "/classify":
            while (await receive()).get("more_body"):
                pass
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def test_past_capacity_answers_429_at_once_then_recovers() -> None:
    async def scenario() -> None:
        app = SlowApp()
        gate = AdmissionGate(app, routes=["/classify"], max_in_flight=3, retry_after_s=2)
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            held = [asyncio.create_task(client.post("/classify", content=b"x")) for _ in range(3)]
            await asyncio.sleep(0.05)
            refused = await asyncio.wait_for(client.post("/classify", content=b"x"), 1.0)
            probe = await asyncio.wait_for(client.get("/readyz"), 1.0)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
            body = refused.json()
            assert body["reason"] == "too_many_requests" and body["retry_after_s"] == 2
            assert "Retry in 2 s." in body["error"] and "3 requests" in body["error"]
            assert probe.status_code == 200
            assert app.reached == 4  # 3 held + the probe; the refused one never got in
            app.release.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
            assert gate.in_flight == 0 and gate.rejected == 1
            again = await client.post("/classify", content=b"x")
            assert again.status_code == 200

    asyncio.run(scenario())


def test_a_failing_request_frees_its_slot() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        gate = AdmissionGate(failing, routes=["/classify"], max_in_flight=1, retry_after_s=1)
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await gate({"type": "http", "path": "/classify"}, None, None)  # type: ignore[arg-type]
        assert gate.in_flight == 0

    asyncio.run(scenario())


def test_busy_bodies_say_to_retry() -> None:
    assert busy_body(503, 3, "The queue is full.")["error"] == "The queue is full. Retry in 3 s."
    assert busy_body(503, 3, "x")["reason"] == "busy"
    with pytest.raises(ValueError, match="KITCHENWARE_MAX_IN_FLIGHT"):
        AdmissionGate(SlowApp(), routes=[], max_in_flight=0, retry_after_s=1)


def test_a_request_still_uploading_holds_no_slot() -> None:
    """Slow uploads must not lock out others (issue 18): a slot is taken at body end."""

    async def scenario() -> None:
        app = SlowApp()
        gate = AdmissionGate(app, routes=["/classify"], max_in_flight=2, retry_after_s=1)
        transport = httpx.ASGITransport(app=gate)
        trickle = asyncio.Event()

        async def endless_upload() -> Any:  # the body never ends until the test says so
            yield b"x"
            await trickle.wait()

        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            uploading = [
                asyncio.create_task(client.post("/classify", content=endless_upload()))
                for _ in range(5)
            ]
            await asyncio.sleep(0.05)
            assert gate.in_flight == 0  # five uploads under way, no slot taken
            held = [asyncio.create_task(client.post("/classify", content=b"x")) for _ in range(2)]
            await asyncio.sleep(0.05)
            assert gate.in_flight == 2
            refused = await asyncio.wait_for(client.post("/classify", content=b"x"), 1.0)
            assert refused.status_code == 429  # full: prompt, before its body is read
            trickle.set()  # the uploads complete while the slots are full: 429 then
            assert [r.status_code for r in await asyncio.gather(*uploading)] == [429] * 5
            app.release.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            assert gate.in_flight == 0

    asyncio.run(scenario())
