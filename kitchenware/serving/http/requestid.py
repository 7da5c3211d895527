"""Request ids: one per HTTP request, in the `X-Request-ID` header, the JSON body and the logs.

`RequestIdMiddleware` (ASGI) keeps a well-formed client `X-Request-ID` or makes a new one,
puts it in a contextvar (`current_request_id()`) and the ASGI scope, and adds the header to
every response. It never touches a body: the endpoints fill the `request_id` field of their
output schemas (so BentoML's own client sees it) and error bodies get it where they are built
(kitchenware/serving/http/errors.py). `RequestIdLogFilter` appends the id to every log line
written while the request is handled.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from starlette.types import ASGIApp, Receive, Scope, Send

from kitchenware.serving.http.headers import setting_header

HEADER = "X-Request-ID"
HEADER_KEY = HEADER.lower().encode()
SCOPE_KEY = "kitchenware.request_id"
BODY_KEY = "request_id"
# Letters, digits and . _ : - up to 128 characters: safe in headers, logs, file names and SQL.
WELL_FORMED = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kitchenware_request_id", default=None
)


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return _request_id.get()


def accepted_request_id(value: str | bytes | None) -> str | None:
    """A client's X-Request-ID if well-formed, else None (a new one is made)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value is None or not WELL_FORMED.fullmatch(value):
        return None
    return value


def request_id_of(scope: Scope | None) -> str | None:
    """The request id the middleware put in an ASGI scope (e.g. from `ctx.request.scope`),
    else in its headers (a background task's stored request), else the current one's."""
    value = (scope or {}).get(SCOPE_KEY)
    if isinstance(value, str):
        return value
    headers = dict((scope or {}).get("headers") or [])
    return accepted_request_id(headers.get(HEADER_KEY)) or current_request_id()


class RequestIdMiddleware:
    """ASGI middleware: a request id for every HTTP request, in the scope and the header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        request_id = accepted_request_id(headers.get(HEADER_KEY)) or new_request_id()
        scope[SCOPE_KEY] = request_id
        # In the request's headers too: BentoML keeps those (not the scope) with a task.
        scope["headers"] = [
            *((k, v) for k, v in scope.get("headers", []) if k != HEADER_KEY),
            (HEADER_KEY, request_id.encode()),
        ]
        token = _request_id.set(request_id)
        value = request_id.encode()
        # No access line of our own: BentoML's access log writes one per request (method,
        # path, status, sizes, time), with this id appended by RequestIdLogFilter.
        try:
            await self.app(scope, receive, setting_header(send, HEADER_KEY, lambda: value))
        finally:
            _request_id.reset(token)


class RequestIdLogFilter(logging.Filter):
    """Adds `request_id` to records and ` [request_id=...]` to their message in a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id()
        record.request_id = request_id or "-"
        if request_id and not getattr(record, "_kitchenware_tagged", False):
            record.msg = f"{record.msg} [request_id={request_id}]"
            record._kitchenware_tagged = True
        return True


def install_log_filter(*logger_names: str) -> None:
    """Tag the handlers of these loggers (default: root, bentoml) with the request id."""
    log_filter = RequestIdLogFilter()
    for name in logger_names or ("", "bentoml", "kitchenware"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if not any(isinstance(f, RequestIdLogFilter) for f in handler.filters):
                handler.addFilter(log_filter)
        if not any(isinstance(f, RequestIdLogFilter) for f in logger.filters):
            logger.addFilter(log_filter)
