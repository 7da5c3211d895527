"""Where a request's time went, in the answer's `Server-Timing` header (W3C Server Timing).

A browser's devtools show it beside the network timing, and `bench/` reads it to split a
served photo's latency into the model's part and the edge's (bench/RESULTS.md section 3).
The pipeline notes its parts in the ASGI scope (`note`): `queue` (waiting for the batcher:
earlier model calls and the thread hand-offs), `decode` and `infer` (the model call this
request shared, with its batch size). This middleware adds `app`, from the moment it saw
the request to the answer's first byte, and writes the header. Durations only.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from kitchenware.serving.http.headers import setting_header

HEADER_KEY = b"server-timing"
SCOPE_KEY = "kitchenware.server_timing"


def note(scope: MutableMapping[str, Any] | None, name: str, seconds: float, desc: str = "") -> None:
    """Add a part to this request's Server-Timing (no-op outside a served request)."""
    parts = (scope or {}).get(SCOPE_KEY)
    if parts is not None:
        parts.append((name, seconds, desc))


def header_value(parts: list[tuple[str, float, str]]) -> bytes:
    """`name;dur=ms` entries, with `;desc="..."` where a part has one."""
    return ", ".join(
        f"{name};dur={seconds * 1000:.2f}" + (f';desc="{desc}"' if desc else "")
        for name, seconds, desc in parts
    ).encode()


def parse(value: str) -> dict[str, float]:
    """A Server-Timing header -> {name: milliseconds} (what bench/ reads)."""
    out: dict[str, float] = {}
    for entry in value.split(","):
        name, *params = (p.strip() for p in entry.split(";"))
        for param in params:
            if param.startswith("dur="):
                out[name] = float(param[4:])
    return out


class ServerTimingMiddleware:
    """ASGI middleware: the parts noted for a request, plus `app`, as a Server-Timing header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        parts: list[tuple[str, float, str]] = []
        scope[SCOPE_KEY] = parts

        def value() -> bytes:
            return header_value([*parts, ("app", time.perf_counter() - started, "")])

        await self.app(scope, receive, setting_header(send, HEADER_KEY, value))
