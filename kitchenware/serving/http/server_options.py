"""Two uvicorn timeouts BentoML 1.4 only takes as hidden `bentoml serve` flags, and one
uvicorn does not have.

- Keep-alive: uvicorn closes a connection idle for 5 s. A pooled client (httpx expires
  idle connections after 5 s too, aiohttp after 15 s) that sends its next request just as
  the server closes gets a reset and no answer: the "dropped connection" of a 96-client
  burst (bench/burst.py; the request never reached the service). A longer server
  keep-alive (like nginx's 75 s) closes that window for every common client.
- Graceful shutdown: on SIGTERM uvicorn stops accepting and waits for in-flight requests,
  without a bound unless one is given; the bound keeps shutdown inside Kubernetes'
  terminationGracePeriodSeconds (30 s).

BentoML 1.4.40 takes both only as hidden `bentoml serve --timeout-keep-alive N
--timeout-graceful-shutdown N` flags: no service or server config key (ServiceConfig's
`http` block has none), no environment variable (the click options declare no envvar), and
the generated container runs a plain `bentoml serve`. A user's plain `bentoml serve` would
keep uvicorn's 5 s. So `apply_server_options` changes uvicorn's defaults in the worker
process only (service.py calls it at import, before BentoML's worker builds its
uvicorn.Config); the flags, when given, still win (an explicit value other than uvicorn's 5).

- Headers that never finish: uvicorn (0.54, httptools or h11) arms no timer while a
  request's headers arrive, nor on a new connection that sends nothing (its keep-alive
  timer starts only after a response, and any byte cancels it), and h11's size limit does
  not bound time. Measured on a served instance: a connection sending one header byte a
  second was still open after minutes. `HeaderDeadline` is a subclass of the HTTP protocol
  uvicorn would pick, passed as `uvicorn.Config(http=...)` (a documented form of that
  option): a connection gets `header_timeout_s` from its first byte (or from its opening)
  to the end of the request's headers, then a 408 and close, as nginx's
  client_header_timeout does. The body has its own bound (uploads.py, the minimum rate).
  httptools bounds the headers' size no more than their time (73 MB of one header in 10 s
  were taken, +108 MB of worker memory), so the same class answers 431 past
  `max_header_bytes`, as h11's max_incomplete_event_size would.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from kitchenware.serving.http.errors import error_body

UVICORN_DEFAULT_KEEP_ALIVE_S = 5


def closing_answer(status: bytes, message: str, reason: str, limit: float) -> bytes:
    """A whole HTTP/1.1 error answer written by the protocol itself (no app, no request id)."""
    body = json.dumps(error_body(message, reason, limit=limit)).encode()
    return (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s" % (status, len(body), body)
    )


def header_deadline_protocol(
    header_timeout_s: float, max_header_bytes: int = 65536
) -> type[asyncio.Protocol]:
    """uvicorn's auto HTTP protocol, closing a connection whose request headers take longer
    than `header_timeout_s` (408) or more than `max_header_bytes` (431)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol
    late = closing_answer(
        b"408 Request Timeout",
        f"The request headers did not arrive within {header_timeout_s:g} s "
        "(KITCHENWARE_HEADER_TIMEOUT_S); the connection is closed.",
        "header_timeout",
        header_timeout_s,
    )
    too_big = closing_answer(
        b"431 Request Header Fields Too Large",
        f"The request line and headers are over {max_header_bytes:,} bytes "
        "(KITCHENWARE_MAX_HEADER_BYTES); the connection is closed.",
        "headers_too_large",
        max_header_bytes,
    )

    class HeaderDeadline(base):
        # Both uvicorn protocols make a new `cycle` when a request's headers are complete,
        # and set `cycle.response_complete` when its answer is sent: between the two the
        # deadline is off; from the next byte on it runs again.
        _header_timer: asyncio.TimerHandle | None = None
        _cycle_at_start: object = None
        _bytes_since_start = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._start_deadline()  # a connection that never sends a byte is bounded too

        def data_received(self, data: bytes) -> None:
            waiting = self.cycle is None or self.cycle.response_complete
            if self._header_timer is None and waiting:
                self._start_deadline()
            self._bytes_since_start += len(data)
            super().data_received(data)
            if self._header_timer is None:
                return
            if self.cycle is not self._cycle_at_start:
                self._stop_deadline()  # headers complete: the body gate takes over
            elif self._bytes_since_start > max_header_bytes and not self.transport.is_closing():
                self._stop_deadline()  # still in the headers, and all of it header bytes
                self.transport.write(too_big)
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_deadline()
            super().connection_lost(exc)

        def _start_deadline(self) -> None:
            self._cycle_at_start, self._bytes_since_start = self.cycle, 0
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _stop_deadline(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            transport = self.transport
            if transport.is_closing() or transport.get_protocol() is not self:
                return  # closed already, or upgraded (websocket): not ours any more
            if self._bytes_since_start:  # a request had begun: say why it ends
                transport.write(late)
            transport.close()

    return HeaderDeadline


def apply_server_options(
    *,
    keep_alive_s: int,
    graceful_shutdown_s: int,
    header_timeout_s: float | None = None,
    max_header_bytes: int = 65536,
) -> None:
    """Make uvicorn.Config default to these timeouts in this process (idempotent)."""
    import uvicorn.config

    protocol = (
        header_deadline_protocol(header_timeout_s, max_header_bytes) if header_timeout_s else None
    )

    config_cls: Any = uvicorn.config.Config
    original = getattr(config_cls.__init__, "__wrapped__", config_cls.__init__)

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("timeout_keep_alive", UVICORN_DEFAULT_KEEP_ALIVE_S) in (
            None,
            UVICORN_DEFAULT_KEEP_ALIVE_S,
        ):
            kwargs["timeout_keep_alive"] = keep_alive_s
        if kwargs.get("timeout_graceful_shutdown") is None:
            kwargs["timeout_graceful_shutdown"] = graceful_shutdown_s
        if protocol is not None and kwargs.get("http", "auto") == "auto":
            kwargs["http"] = protocol
        original(self, *args, **kwargs)

    config_cls.__init__ = init
