"""The ASGI middlewares around the service, in the order BentoML applies them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bentoml
from starlette.middleware.cors import CORSMiddleware

from kitchenware.serving.http.auth import ApiKeyGate
from kitchenware.serving.http.cors import cors_options
from kitchenware.serving.http.docspage import DocsPage
from kitchenware.serving.http.overload import AdmissionGate
from kitchenware.serving.http.requestid import RequestIdMiddleware
from kitchenware.serving.http.servertiming import ServerTimingMiddleware
from kitchenware.serving.http.uploads import UploadGate, UploadPace
from kitchenware.serving.inference.tasks import TaskRoutes
from kitchenware.serving.metrics import count_rejection
from kitchenware.serving.routes import admitted_paths, routes, task_paths, upload_rules
from kitchenware.serving.settings import ServiceSettings


def install_middlewares(
    service: bentoml.Service[Any],
    settings: ServiceSettings,
    facts: Callable[[], dict[str, Any]],
) -> None:
    """BentoML applies these in the order added, outermost first.

    Request ids first, so every answer below (refusals too) carries one; Server-Timing
    (where the request's time went: http/servertiming.py); CORS (off unless
    origins are set) answers preflights; the API key check (off unless keys are set) refuses
    strangers everywhere but /livez, /readyz, /metrics (the Swagger page too); this service's
    own Swagger page at / and /docs.json; admission counts a request on the routes that run
    the model once its body is complete (a prompt 429 when full); then the upload gate, which
    checks the body as it streams to BentoML; TaskRoutes runs inside it and sees the client
    file names it recorded.
    """
    table = routes(settings)
    service.add_asgi_middleware(RequestIdMiddleware)
    service.add_asgi_middleware(ServerTimingMiddleware)
    if (cors := cors_options(settings.cors_allowed_origins)) is not None:
        service.add_asgi_middleware(CORSMiddleware, **cors)
    service.add_asgi_middleware(ApiKeyGate, keys=settings.api_keys)
    service.add_asgi_middleware(DocsPage, runtime=facts)
    service.add_asgi_middleware(
        AdmissionGate,
        routes=admitted_paths(table),
        max_in_flight=settings.max_in_flight,
        retry_after_s=settings.retry_after_s,
    )
    service.add_asgi_middleware(
        UploadGate,
        routes=upload_rules(table),
        max_upload_bytes=settings.max_upload_bytes,
        pace=UploadPace(settings.min_upload_bytes_per_s, settings.upload_grace_s),
        on_reject=count_rejection,
    )
    service.add_asgi_middleware(TaskRoutes, routes=task_paths(table))
