"""Error answers the service builds itself: a status, a reason code, one sentence, the request id.

Every JSON error body this service writes goes through `error_answer`, which puts the
request's id (set by `RequestIdMiddleware` in a contextvar) into the body as it is built:
no middleware rewrites answer bodies afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kitchenware.serving.http.requestid import BODY_KEY, current_request_id


def error_body(message: str, reason: str, **details: Any) -> dict[str, Any]:
    """The one shape of every error this service answers: a sentence, a reason code, extras."""
    return {"error": message, "reason": reason, **details}


class ClientError(Exception):
    """A request refused with `status_code`; `reason` is the short code and metrics label."""

    def __init__(self, status_code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.reason = reason
        self.message = message
        self.details = details  # extra JSON fields, e.g. the limit or the field

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "reason": self.reason, **self.details}


def error_answer(
    body: Mapping[str, Any], status_code: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON error answer whose body carries the current request's id."""
    return JSONResponse({**body, BODY_KEY: current_request_id()}, status_code, headers)


class _Stopped(BaseException):
    """Raised from a wrapped receive() to stop the app mid-body.

    A BaseException, so BentoML's handlers (which catch Exception, log a traceback and
    answer 500) let it through to the middleware that raised it.
    """


class BodyWatch:
    """Lets a middleware stop the app behind it while the request body streams through.

    `stop(answer)` (called from the middleware's receive wrapper) aborts the app where it
    awaits the body; `run` then swallows the app's own output and sends `answer` instead.
    """

    def __init__(self, send: Send) -> None:
        self.answer: Response | None = None
        self.stopped = False
        self.started = False  # the app began its answer: too late to replace it
        self._send = send

    def stop(self, answer: Response | None) -> NoReturn:
        """Abort the app; `answer` goes to the client (None: the client is gone, say nothing)."""
        self.answer, self.stopped = answer, True
        raise _Stopped

    async def send(self, message: Message) -> None:
        if self.stopped:
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive) -> None:
        try:
            await app(scope, receive, self.send)
        except BaseException:
            if not self.stopped:  # not ours (an outer middleware's stop, a bug): pass it on
                raise
        if self.answer is not None and not self.started:
            await self.answer(scope, receive, self._send)
