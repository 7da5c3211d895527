"""Overload answers: past capacity, a quick 429 or 503 that says when to retry, never a hang.

`AdmissionGate` (ASGI) admits at most `max_in_flight` requests per worker on the routes
that run the model; the next one is answered 429 with a JSON sentence and a `Retry-After`
header. A request takes its slot only once its body is complete: an upload still on its
way holds no model slot, so slow clients cannot lock out others (the upload gate's pace
limit cuts those off). When the slots are already full, the 429 comes at once, before the
body is read; a request whose upload completes while they are full gets it then. Behind
it, the batcher sheds a request whose queue wait would exceed the latency budget (503,
same shape). Probes and metrics are never gated. BentoML's own `traffic.max_concurrency`
would answer 429 too, but from outside every user middleware: without a retry sentence,
`Retry-After` or request id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kitchenware.serving.http.errors import BodyWatch, error_answer, error_body
from kitchenware.serving.metrics import BUSY_REJECTIONS


def busy_body(status: int, retry_after_s: int, detail: str) -> dict[str, Any]:
    """The JSON every overload answer carries (429 from the gate, 503 from the batcher)."""
    reason = "too_many_requests" if status == 429 else "busy"
    return error_body(f"{detail} Retry in {retry_after_s} s.", reason, retry_after_s=retry_after_s)


class AdmissionGate:
    """ASGI middleware: at most `max_in_flight` requests at once on `routes`, per worker."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Iterable[str],
        max_in_flight: int,
        retry_after_s: int,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"KITCHENWARE_MAX_IN_FLIGHT must be at least 1, not {max_in_flight}.")
        self.app = app
        self.routes = frozenset(routes)
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.rejected = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.routes:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            # No Connection: close although the body is unread: closing a socket with unread
            # bytes resets it and can destroy this very answer at the client (the burst test
            # saw ReadErrors); uvicorn discards the rest of the body and keeps the connection.
            await self._busy()(scope, receive, send)
            return
        watch = BodyWatch(send)
        admitted = False

        async def admitting() -> Message:
            nonlocal admitted
            message = await receive()
            body_complete = message["type"] == "http.request" and not message.get("more_body")
            if body_complete and not admitted:
                if self.in_flight >= self.max_in_flight:
                    watch.stop(self._busy())
                self.in_flight += 1  # one event loop per worker: no lock needed
                admitted = True
            return message

        try:
            await watch.run(self.app, scope, admitting)
        finally:
            if admitted:
                self.in_flight -= 1

    def _busy(self) -> JSONResponse:
        self.rejected += 1
        BUSY_REJECTIONS.inc()
        detail = (
            f"The server is at capacity ({self.max_in_flight} requests in progress in this worker)."
        )
        return error_answer(
            busy_body(429, self.retry_after_s, detail),
            429,
            {"Retry-After": str(self.retry_after_s)},
        )
