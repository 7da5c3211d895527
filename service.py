"""The BentoML service: kitchenware photo in, label out.

One service, one process: the HTTP API (/classify, /classify_batch, Swagger UI, upload
checks, decoding) and the model run in the same worker. Concurrent requests meet in an
in-process batcher (kitchenware.serving.inference.batching) and share one model call. The model is
loaded through kitchenware.runtime.backends (`KITCHENWARE_BACKEND`, default `auto`: the
fastest runtime that passed the accuracy gate); with an OpenVINO backend this process
never imports TensorFlow.

One process replaced the former front + model-service pair: at OpenVINO speeds the
second multipart parse, the array hop over HTTP and the second process cost more CPU per
image than the model (bench/RESULTS.md, "one process or two").
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TypeVar, cast

import anyio
import anyio.to_thread
import bentoml
import numpy as np
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from kitchenware.runtime.backends import Backend, load_backend
from kitchenware.serving.feedback.explain import ExplainResponse
from kitchenware.serving.feedback.handlers import (
    EXPLAIN_FIELDS,
    FEEDBACK_FIELDS,
    FeedbackAnswer,
    FeedbackLoop,
)
from kitchenware.serving.http.auth import ApiKeyGate, startup_line
from kitchenware.serving.http.cors import cors_options
from kitchenware.serving.http.docspage import DocsPage
from kitchenware.serving.http.errors import with_request_id
from kitchenware.serving.http.overload import AdmissionGate
from kitchenware.serving.http.requestid import (
    RequestIdMiddleware,
    install_log_filter,
    request_id_of,
)
from kitchenware.serving.http.server_options import apply_server_options
from kitchenware.serving.http.uploads import FileField, UploadGate, UploadPace
from kitchenware.serving.inference.batching import MicroBatcher, QueueFull
from kitchenware.serving.inference.decoding import (
    BatchClassification,
    Classification,
    ServedModel,
    Upload,
    busy_response,
    classification,
    decode_failure_response,
    decode_uploads,
    locate_model,
    uploads_from,
)
from kitchenware.serving.inference.preflight import refuse_unusable_model
from kitchenware.serving.inference.tasks import (
    TASK_ROUTE,
    TaskLimits,
    TaskRoutes,
    classify_task,
    task_uploads,
)
from kitchenware.serving.metrics import BUSY_REJECTIONS, count_rejection, record_runtime
from kitchenware.serving.settings import get_settings
from kitchenware.serving.ui import ui_app

settings = get_settings()
# Class-level on the service, so `bentoml build` packs the model into the bento.
MODEL_REFERENCE = bentoml.models.BentoModel(settings.model_tag)
# An unusable model stops `bentoml serve` here with one sentence (exit 2), before any
# worker starts and crashes in a restart loop (kitchenware/serving/inference/preflight.py).
refuse_unusable_model(MODEL_REFERENCE)
# Keep-alive past uvicorn's 5 s (pooled clients raced it: dropped connections) and a bounded
# graceful shutdown; BentoML has no config key for either (serving/server_options.py).
apply_server_options(
    keep_alive_s=settings.keep_alive_s, graceful_shutdown_s=settings.graceful_shutdown_s
)
logger = logging.getLogger("kitchenware.service")
# BentoML leaves the root logger at WARNING; the backend choice and gate skips are INFO.
logging.getLogger("kitchenware").setLevel(logging.INFO)


# The upload page; `/` stays the Swagger page (kitchenware/serving/http/docspage.py).
@bentoml.asgi_app(ui_app(), path="/ui")
@bentoml.service(
    name="kitchenware",
    workers=settings.workers,
    traffic={"timeout": settings.timeout_s},
    labels={"project": "kitchenware", "task": "image-classification"},
)
class Kitchenware:
    """Classify kitchenware photos (cup, glass, plate, spoon, fork, knife)."""

    bento_model = MODEL_REFERENCE

    def __init__(self) -> None:
        if bentoml.server_context.worker_index in (None, 1):  # once per server, not per worker
            logger.warning(startup_line(tuple(settings.api_keys)))
        self.served: ServedModel = locate_model(MODEL_REFERENCE)
        # A few decode threads: each may hold a large decoded image, and there are few cores.
        self.decode_limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 1))
        # Prediction log, feedback store, heatmaps (kitchenware/serving/feedback/handlers.py).
        install_log_filter()
        self.loop = FeedbackLoop(
            settings, self.served.tag, self.served.metadata.class_names, settings.backend
        )
        # Load in a thread: BentoML starts answering HTTP only after __init__ returns, and a
        # /readyz probe must get a prompt 503 while the model loads, not hang.
        self.loaded = threading.Event()
        self.load_error: BaseException | None = None
        threading.Thread(target=self._load, name="kitchenware-model-load", daemon=True).start()

    def _load(self) -> None:
        try:
            backend = load_backend(
                self.served.path, settings.backend, allow_failed_gate=settings.allow_failed_gate
            )
            backend.warm_up()  # the server turns ready only after this
        except BaseException as exc:
            self.load_error = exc
            logger.exception("loading %s failed", self.served.tag)
            raise
        self.backend: Backend = backend
        self.runtime = backend.runtime_info()
        self.loop.set_backend(backend.name)
        record_runtime(self.runtime, self.served.tag)
        logger.info(
            "serving %s with backend %s (%s)",
            self.served.tag,
            backend.name,
            ", ".join(f"{k}={v}" for k, v in self.runtime.items() if k != "backend"),
        )
        self.batcher = MicroBatcher(
            backend.predict_arrays,
            max_batch_size=settings.max_batch_size,
            max_latency_ms=settings.max_latency_ms,
        )
        self.loaded.set()

    async def __is_ready__(self) -> bool:
        """Ready once the model is loaded and warmed up."""
        return self.loaded.is_set()

    async def classify_arrays(self, batch: np.ndarray) -> np.ndarray | JSONResponse:
        """Probabilities for uint8 (n, size, size, 3) arrays, or a 503 when the queue is full."""
        if not self.loaded.is_set():  # a request during start-up waits for the model
            await anyio.to_thread.run_sync(self.loaded.wait, float(settings.timeout_s))
        if not self.loaded.is_set():
            state = "failed to load; see the server log" if self.load_error else "still loading"
            return busy_response(settings.retry_after_s, f"The model is {state}. Retry later.")
        try:
            return await self.batcher.submit(batch.astype(np.float32))
        except QueueFull:
            BUSY_REJECTIONS.inc()
            return busy_response(settings.retry_after_s)

    async def _run(
        self, paths: list[Path], field: str, ctx: bentoml.Context, *, indexed: bool
    ) -> list[Classification] | JSONResponse:
        started = time.perf_counter()
        scope = getattr(ctx.request, "scope", None)
        uploads = uploads_from(paths, scope)
        meta = self.served.metadata
        batch, failures = await anyio.to_thread.run_sync(
            lambda: decode_uploads(
                uploads, field, meta.image_size, settings.max_image_pixels, indexed=indexed
            ),
            limiter=self.decode_limiter,
        )
        if failures:
            return decode_failure_response(failures)
        probabilities = await self.classify_arrays(batch)
        if isinstance(probabilities, JSONResponse):
            return probabilities
        elapsed_ms = (time.perf_counter() - started) * 1000
        request_id = request_id_of(scope)
        await self.loop.arecord(request_id, paths, probabilities, elapsed_ms)
        return self._results(probabilities, uploads, request_id)

    def _results(
        self, probabilities: np.ndarray, uploads: list[Upload], request_id: str | None
    ) -> list[Classification]:
        return [
            classification(
                row,
                self.served.metadata,
                self.served.tag,
                settings.top_k,
                upload.filename,
                self.backend.name,
                request_id,
            )
            for row, upload in zip(probabilities, uploads, strict=True)
        ]

    def _batch(self, results: list[Classification], request_id: str | None) -> BatchClassification:
        return BatchClassification(
            model=self.served.tag,
            runtime=self.backend.name,
            count=len(results),
            results=results,
            request_id=request_id,
        )

    @bentoml.api(route="/classify", output_spec=Classification)
    async def classify(self, image: Path, ctx: bentoml.Context) -> Classification | JSONResponse:
        """Classify one photo sent as multipart file field `image` (JPEG, PNG, WebP, BMP,
        TIFF or GIF). Returns the label, its confidence, every class's probability and the
        top classes."""
        results = await self._run([image], "image", ctx, indexed=False)
        return _with_status(ctx, results) if isinstance(results, JSONResponse) else results[0]

    @bentoml.api(route="/classify_batch", output_spec=BatchClassification)
    async def classify_batch(
        self, images: list[Path], ctx: bentoml.Context
    ) -> BatchClassification | JSONResponse:
        """Classify several photos sent as repeated multipart file field `images`. Returns
        one result per image, in request order."""
        results = await self._run(images, "images", ctx, indexed=True)
        if isinstance(results, JSONResponse):
            return _with_status(ctx, results)
        return self._batch(results, _request_id(ctx))

    @bentoml.task(route=TASK_ROUTE, output_spec=BatchClassification)
    async def classify_batch_async(
        self, images: list[Path], ctx: bentoml.Context
    ) -> BatchClassification | JSONResponse:
        """A big batch in the background: repeated file field `images` holding photos and/or
        zip files of photos. POST /classify_batch_async/submit answers a task_id at once;
        GET /classify_batch_async/status?task_id= tells its state, and
        /classify_batch_async/get?task_id= then returns the /classify_batch answer (request
        order, zip members in archive order). Results live in this server process until it
        restarts."""
        limits = TaskLimits(
            max_files=settings.max_task_files,
            max_unzipped_bytes=settings.max_task_unzipped_bytes,
            max_pixels=settings.max_image_pixels,
            chunk_size=settings.max_batch_size,
        )
        done = await classify_task(
            task_uploads(images, ctx.request),
            limits,
            self.served.metadata.image_size,
            self.classify_arrays,
            self.decode_limiter,
        )
        if isinstance(done, JSONResponse):
            return _with_status(ctx, done)
        uploads, probabilities = done
        request_id = _request_id(ctx)
        return self._batch(self._results(probabilities, uploads, request_id), request_id)

    @bentoml.api(route="/feedback", output_spec=FeedbackAnswer)
    async def feedback(
        self,
        ctx: bentoml.Context,
        label: str = "",
        request_id: str = "",
        index: int = 0,
        note: str = "",
        # A list: BentoML 1.4 cannot parse an optional single file; the gate allows one.
        image: list[Path] = [],  # noqa: B006 (BentoML reads the default, never mutates it)
    ) -> FeedbackAnswer | JSONResponse:
        """Correct a prediction: `label` (the right class) and either `request_id` (from a
        /classify answer; `index` for a /classify_batch one) or the photo itself as file
        field `image`; `note` is optional free text. Send JSON or a form (`client.feedback(
        request_id=..., label=...)`), or multipart/form-data when the photo goes along.
        Answered only after the correction is committed; 404 for an unknown or expired
        request id, 409 for a repeat, 400 for a label the model does not know."""
        result = await self.loop.afeedback(
            label=label,
            request_id=request_id,
            index=index,
            image=image[0] if image else None,
            note=note,
        )
        return _answer(ctx, result)

    @bentoml.api(route="/explain", output_spec=ExplainResponse)
    async def explain(
        self, image: Path, ctx: bentoml.Context, label: str = "", method: str = ""
    ) -> ExplainResponse | JSONResponse:
        """A heatmap of what the model looked at, as a PNG over the photo at its own size
        (base64 `overlay_png`). `label`: the class to explain (default: the predicted one);
        `method`: gradcam (TensorFlow backend) or occlusion (any backend); default per
        backend (KITCHENWARE_EXPLAIN_METHOD)."""
        if not self.loaded.is_set():
            return _with_status(ctx, busy_response(settings.retry_after_s, "The model is loading."))
        result = await self.loop.aexplain(self.backend, image, label, method, self.decode_limiter)
        return _answer(ctx, result)


Answer = TypeVar("Answer", FeedbackAnswer, ExplainResponse)


def _request_id(ctx: bentoml.Context) -> str | None:
    return request_id_of(getattr(ctx.request, "scope", None))


def _answer(ctx: bentoml.Context, result: Answer | JSONResponse) -> Answer | JSONResponse:
    """The loop's answer with this request's id (errors built there get it here)."""
    if isinstance(result, JSONResponse):
        return _with_status(ctx, with_request_id(result))
    result.request_id = _request_id(ctx)
    return result


def _with_status(ctx: bentoml.Context, response: JSONResponse) -> JSONResponse:
    """BentoML overwrites a returned response's status with ctx's when an API takes ctx."""
    ctx.response.status_code = response.status_code
    return response


def _install_middlewares(service: bentoml.Service[Kitchenware]) -> None:
    """BentoML applies these in the order added, outermost first.

    Request ids first, so every answer below (refusals too) carries one; CORS (off unless
    origins are set) answers preflights; the API key check (off unless keys are set) refuses
    strangers everywhere but /livez, /readyz, /metrics (the Swagger page too); this service's
    own Swagger page at / and /docs.json; admission counts a request on the routes that run
    the model once its body is complete (a prompt 429 when full); then the upload gate, which
    checks the body as it streams to BentoML; TaskRoutes runs inside it and sees the client
    file names it recorded.
    """
    service.add_asgi_middleware(RequestIdMiddleware)
    if (cors := cors_options(settings.cors_allowed_origins)) is not None:
        service.add_asgi_middleware(CORSMiddleware, **cors)
    service.add_asgi_middleware(ApiKeyGate, keys=settings.api_keys)
    service.add_asgi_middleware(DocsPage)
    service.add_asgi_middleware(
        AdmissionGate,
        routes=("/classify", "/classify_batch", "/explain", TASK_ROUTE, f"{TASK_ROUTE}/submit"),
        max_in_flight=settings.max_in_flight,
        retry_after_s=settings.retry_after_s,
    )
    task_field = FileField(
        "images", max_files=settings.max_task_files, limit_setting="KITCHENWARE_MAX_TASK_FILES"
    )
    service.add_asgi_middleware(
        UploadGate,
        routes={
            "/classify": FileField("image", max_files=1),
            "/classify_batch": FileField(
                "images",
                max_files=settings.max_batch_files,
                limit_setting="KITCHENWARE_MAX_BATCH_FILES",
            ),
            "/feedback": FEEDBACK_FIELDS,
            "/explain": EXPLAIN_FIELDS,
            TASK_ROUTE: task_field,
            f"{TASK_ROUTE}/submit": task_field,
        },
        max_upload_bytes=settings.max_upload_bytes,
        pace=UploadPace(settings.min_upload_bytes_per_s, settings.upload_grace_s),
        on_reject=count_rejection,
    )
    service.add_asgi_middleware(TaskRoutes)


# One module-level name for the service (`bentoml serve service.py` refuses two); mypy does
# not see that @bentoml.service made the class a bentoml.Service.
_install_middlewares(cast("bentoml.Service[Kitchenware]", Kitchenware))
