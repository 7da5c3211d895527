"""Optional API keys: an ASGI middleware that asks for `Authorization: Bearer <key>`.

Off unless KITCHENWARE_API_KEYS lists keys (comma-separated; several at once let keys be
rotated without downtime). Probes and metrics stay open so Kubernetes and Prometheus
need no secret. Every key is compared in constant time, and all keys are always
compared, so the answer time says nothing about how much of a key was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from kitchenware.serving.http.errors import error_answer, error_body

OPEN_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
MIN_KEY_LENGTH = 16


def check_keys(keys: Iterable[str]) -> tuple[str, ...]:
    """The configured keys, stripped; a ValueError naming the setting for a weak one."""
    cleaned = tuple(key.strip() for key in keys if key.strip())
    for index, key in enumerate(cleaned):
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(
                f"KITCHENWARE_API_KEYS entry {index + 1} has {len(key)} characters; use at "
                f"least {MIN_KEY_LENGTH} (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`)."
            )
    return cleaned


def startup_line(keys: tuple[str, ...]) -> str:
    """The one line the server logs at start-up about who may call it."""
    if not keys:
        return (
            "API KEYS OFF: anyone who can reach this port can call every endpoint. "
            "Set KITCHENWARE_API_KEYS to require 'Authorization: Bearer <key>'."
        )
    return (
        f"API keys on: {len(keys)} key(s) accepted as 'Authorization: Bearer <key>'; "
        f"open without a key: {', '.join(sorted(OPEN_PATHS))}."
    )


def key_matches(presented: bytes, keys: tuple[bytes, ...]) -> bool:
    """Constant-time comparison against every key (no early exit)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    return matched


def bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, token = bytes(value).partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" and token.strip() else b""
    return None


class ApiKeyGate:
    """ASGI middleware: 401 with a sentence unless the request carries a configured key."""

    def __init__(self, app: ASGIApp, *, keys: Iterable[str], open_paths: Any = OPEN_PATHS):
        self.app = app
        self.keys = tuple(key.encode() for key in check_keys(keys))
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.keys
            or scope["type"] not in ("http", "websocket")
            or scope.get("path", "") in self.open_paths
            or scope.get("method") == "OPTIONS"  # CORS preflights carry no credentials
        ):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token and key_matches(token, self.keys):
            await self.app(scope, receive, send)
            return
        if token is None:
            message = (
                "This server requires an API key: send the header 'Authorization: Bearer "
                "<key>' (curl -H 'Authorization: Bearer <key>')."
            )
        elif token == b"":
            message = "The Authorization header must be 'Bearer <key>'."
        else:
            message = "The API key sent in the Authorization header is not valid."
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        # The body was not read: close the connection rather than leave it half-read.
        await error_answer(
            error_body(message, "unauthorized"),
            401,
            {"WWW-Authenticate": 'Bearer realm="kitchenware"', "Connection": "close"},
        )(scope, receive, send)
