"""Overload answers: past capacity, a quick 429 or 503 that says when to retry, never a hang.

`AdmissionGate` (ASGI) admits at most `max_in_flight` requests per worker on the routes
that run the model; the next one is answered 429 at once, before its body is read, with
a JSON sentence and a `Retry-After` header. Behind it, the batcher sheds a request whose
queue wait would exceed the latency budget (503, same shape). Probes and metrics are
never gated. BentoML's own `traffic.max_concurrency` would answer 429 too, but from
outside every user middleware: without a retry sentence, `Retry-After` or request id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from kitchenware.serving.metrics import BUSY_REJECTIONS


def busy_body(status: int, retry_after_s: int, detail: str) -> dict[str, Any]:
    """The JSON every overload answer carries (429 from the gate, 503 from the batcher)."""
    return {
        "error": f"{detail} Retry in {retry_after_s} s.",
        "reason": "too_many_requests" if status == 429 else "busy",
        "retry_after_s": retry_after_s,
    }


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
            self.rejected += 1
            BUSY_REJECTIONS.inc()
            detail = (
                f"The server is at capacity ({self.max_in_flight} requests in progress "
                "in this worker)."
            )
            await JSONResponse(
                busy_body(429, self.retry_after_s, detail),
                429,
                {"Retry-After": str(self.retry_after_s)},
            )(scope, receive, send)
            return
        self.in_flight += 1  # one event loop per worker: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
