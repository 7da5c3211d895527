"""The BentoML service: kitchenware photo in, label out.

One service, one process: the HTTP API and the model run in the same worker; concurrent
requests meet in an in-process batcher and share one model call
(kitchenware/serving/inference/pipeline.py). The model is loaded through
kitchenware.runtime.backends (`KITCHENWARE_BACKEND`, default `auto`: the fastest runtime that
passed the accuracy gate); with an OpenVINO backend this process never imports TensorFlow.
The gates around the endpoints are in kitchenware/serving/middleware.py, every route's
upload rule in kitchenware/serving/routes.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import bentoml
from starlette.responses import JSONResponse

from kitchenware.serving.feedback.explain import ExplainResponse
from kitchenware.serving.feedback.handlers import FeedbackAnswer, FeedbackLoop
from kitchenware.serving.http.answers import answered, request_id, with_status
from kitchenware.serving.http.auth import startup_line
from kitchenware.serving.http.fileparts import UploadedFile
from kitchenware.serving.http.requestid import install_log_filter
from kitchenware.serving.http.server_options import apply_server_options
from kitchenware.serving.inference.decoding import BatchClassification, Classification
from kitchenware.serving.inference.pipeline import Pipeline, ServedFacts
from kitchenware.serving.inference.preflight import refuse_unusable_model
from kitchenware.serving.instancedir import use_own_instance_dir
from kitchenware.serving.middleware import install_middlewares
from kitchenware.serving.routes import CLASSIFY, CLASSIFY_BATCH, EXPLAIN, FEEDBACK, TASK
from kitchenware.serving.settings import get_settings
from kitchenware.serving.ui import ui_app

settings = get_settings()
# Its own task store and metrics folder for this server (not $BENTOML_HOME's one per home), so
# two servers can share a BENTOML_HOME; decided here, in `bentoml serve`, before BentoML does.
use_own_instance_dir()
# Class-level on the service, so `bentoml build` packs the model into the bento.
MODEL_REFERENCE = bentoml.models.BentoModel(settings.model_tag)
# An unusable model stops `bentoml serve` here with one sentence (exit 2), before any
# worker starts and crashes in a restart loop.
refuse_unusable_model(MODEL_REFERENCE)
# Keep-alive past uvicorn's 5 s, a bounded graceful shutdown, a deadline for request
# headers: BentoML has no config key for them (kitchenware/serving/http/server_options.py).
apply_server_options(
    keep_alive_s=settings.keep_alive_s,
    graceful_shutdown_s=settings.graceful_shutdown_s,
    header_timeout_s=settings.header_timeout_s,
    max_header_bytes=settings.max_header_bytes,
)
# BentoML leaves the root logger at WARNING; the backend choice and gate skips are INFO.
logging.getLogger("kitchenware").setLevel(logging.INFO)
# What answers, shown by the docs page and the upload page; filled in as the model loads.
FACTS = ServedFacts()


# The upload page; `/` stays the Swagger page (kitchenware/serving/http/docspage.py).
@bentoml.asgi_app(ui_app(FACTS), path="/ui")
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
            logging.getLogger("kitchenware.service").warning(startup_line(tuple(settings.api_keys)))
        self.pipeline = Pipeline(settings, MODEL_REFERENCE, FACTS)
        served = self.pipeline.served
        install_log_filter()
        # Prediction log, feedback store, heatmaps (kitchenware/serving/feedback/).
        self.loop = FeedbackLoop(
            settings, served.tag, served.metadata.class_names, settings.backend
        )
        self.pipeline.start_loading(on_loaded=self.loop.set_backend)

    async def __is_ready__(self) -> bool:
        """Ready once the model is loaded and warmed up."""
        return self.pipeline.loaded.is_set()

    @bentoml.on_shutdown
    def close_feedback_store(self) -> None:
        self.loop.close()

    @bentoml.api(route=CLASSIFY, output_spec=Classification)
    async def classify(
        self, image: UploadedFile, ctx: bentoml.Context
    ) -> Classification | JSONResponse:
        """Classify one photo sent as multipart file field `image` (JPEG, PNG, WebP, BMP,
        TIFF or GIF). Returns the label, its confidence, every class's probability and the
        top classes."""
        scope = getattr(ctx.request, "scope", None)
        results = await self.pipeline.classify(
            [image], "image", scope, self.loop.arecord, indexed=False
        )
        return with_status(ctx, results) if isinstance(results, JSONResponse) else results[0]

    @bentoml.api(route=CLASSIFY_BATCH, output_spec=BatchClassification)
    async def classify_batch(
        self, images: list[UploadedFile], ctx: bentoml.Context
    ) -> BatchClassification | JSONResponse:
        """Classify several photos sent as repeated multipart file field `images`. Returns
        one result per image, in request order."""
        scope = getattr(ctx.request, "scope", None)
        results = await self.pipeline.classify(
            images, "images", scope, self.loop.arecord, indexed=True
        )
        if isinstance(results, JSONResponse):
            return with_status(ctx, results)
        return self.pipeline.batch(results, request_id(ctx))

    @bentoml.task(route=TASK, output_spec=BatchClassification)
    async def classify_batch_async(
        self, images: list[Path], ctx: bentoml.Context
    ) -> BatchClassification | JSONResponse:
        """A big batch in the background: repeated file field `images` holding photos and/or
        zip files of photos. POST /classify_batch_async/submit answers a task_id at once;
        GET /classify_batch_async/status?task_id= tells its state, and
        /classify_batch_async/get?task_id= then returns the /classify_batch answer (request
        order, zip members in archive order). Results live in this server process until it
        restarts."""
        done = await self.pipeline.classify_task(images, ctx.request)
        return with_status(ctx, done) if isinstance(done, JSONResponse) else done

    @bentoml.api(route=FEEDBACK, output_spec=FeedbackAnswer)
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
        photo = image[0] if image else None
        result = await self.loop.afeedback(
            label=label, request_id=request_id, index=index, image=photo, note=note
        )
        return answered(ctx, result)

    @bentoml.api(route=EXPLAIN, output_spec=ExplainResponse)
    async def explain(
        self, image: Path, ctx: bentoml.Context, label: str = "", method: str = ""
    ) -> ExplainResponse | JSONResponse:
        """A heatmap of what the model looked at, as a PNG over the photo at its own size
        (base64 `overlay_png`). `label`: the class to explain (default: the predicted one);
        `method`: gradcam (TensorFlow backend) or occlusion (any backend); default per
        backend (KITCHENWARE_EXPLAIN_METHOD)."""
        if (loading := self.pipeline.not_loaded()) is not None:
            return with_status(ctx, loading)
        pipeline = self.pipeline
        result = await self.loop.aexplain(
            pipeline.backend, image, label, method, pipeline.decode_limiter
        )
        return answered(ctx, result)


# One module-level name for the service (`bentoml serve service.py` refuses two); mypy does
# not see that @bentoml.service made the class a bentoml.Service.
install_middlewares(cast("bentoml.Service[Kitchenware]", Kitchenware), settings, FACTS)
