"""One response header set by a middleware on its way out (request id, Server-Timing)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Message, Send


def setting_header(send: Send, name: bytes, value: Callable[[], bytes]) -> Send:
    """`send` that sets header `name` (replacing any the app set) on the response start, to
    `value()` computed at that moment."""

    async def send_with_header(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != name]
            message = {**message, "headers": [*headers, (name, value())]}
        await send(message)

    return send_with_header
