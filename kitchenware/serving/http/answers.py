"""What an endpoint returns through BentoML: its answer with this request's id and status."""

from __future__ import annotations

from typing import Protocol, TypeVar

import bentoml
from starlette.responses import JSONResponse

from kitchenware.serving.http.requestid import request_id_of


class CarriesRequestId(Protocol):
    request_id: str | None


Answer = TypeVar("Answer", bound=CarriesRequestId)


def request_id(ctx: bentoml.Context) -> str | None:
    return request_id_of(getattr(ctx.request, "scope", None))


def with_status(ctx: bentoml.Context, response: JSONResponse) -> JSONResponse:
    """BentoML overwrites a returned response's status with ctx's when an API takes ctx."""
    ctx.response.status_code = response.status_code
    return response


def answered(ctx: bentoml.Context, result: Answer | JSONResponse) -> Answer | JSONResponse:
    """The answer with this request's id (error answers carry it already: errors.error_answer)."""
    if isinstance(result, JSONResponse):
        return with_status(ctx, result)
    result.request_id = request_id(ctx)
    return result
