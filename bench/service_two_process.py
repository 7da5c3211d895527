"""The two-process layout (front + model service), kept only so bench/serving.py can measure
it against service.py's one-process layout (bench/RESULTS.md, "one process or two").

Formerly service.py:

Two services, one process each under `bentoml serve`:
- `Kitchenware` (HTTP front): /classify, /classify_batch, Swagger UI, upload checks,
  decoding. It never loads TensorFlow.
- `KitchenwareModel` (inner): one batchable `predict` over uint8 image arrays. Requests
  from both endpoints meet in BentoML's adaptive batcher there, so concurrent
  single-image requests share a model call.
"""

from __future__ import annotations

import asyncio
import os
from http import HTTPStatus
from pathlib import Path
from typing import cast

import aiohttp
import anyio
import anyio.to_thread
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse

from kitchenware.core.backends import load_backend
from kitchenware.serving.metrics import BUSY_REJECTIONS, count_rejection
from kitchenware.serving.responses import (
    BatchClassification,
    Classification,
    ServedModel,
    busy_response,
    classification,
    decode_failure_response,
    decode_uploads,
    locate_model,
    uploads_from,
)
from kitchenware.serving.settings import get_settings
from kitchenware.serving.uploads import FileField, UploadGate

settings = get_settings()
# Class-level on the model service, so `bentoml build` packs the model into the bento.
MODEL_REFERENCE = bentoml.models.BentoModel(settings.model_tag)
BUSY_STATUSES = {HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.TOO_MANY_REQUESTS}
NEVER_RECYCLE = 2**31 - 1
READY_PROBE_TIMEOUT_S = 2.0


@bentoml.service(
    name="kitchenware_model",
    workers=settings.workers,
    traffic={"timeout": settings.timeout_s},
    # BentoML 1.4.39 recycles the front's connection pool every 100 requests and closes it
    # under requests still in flight (measured: 14 of 320 answered 500 at 32 concurrent).
    runner_connection={"max_requests": NEVER_RECYCLE, "max_age": float(NEVER_RECYCLE)},
)
class KitchenwareModel:
    """The model behind the front service: a batch of images in, probabilities out."""

    bento_model = MODEL_REFERENCE

    def __init__(self) -> None:
        served = locate_model(MODEL_REFERENCE)
        self.classifier = load_backend(served.path, settings.backend)
        self.classifier.warm_up()  # the server turns ready only after this

    @bentoml.api(
        batchable=True,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
    )
    async def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (n, size, size, 3) RGB -> float32 (n, classes) probabilities."""
        batch = np.asarray(images, dtype=np.float32)
        # In a thread, so the batcher keeps queueing requests while the model runs.
        return await anyio.to_thread.run_sync(self.classifier.predict_arrays, batch)


@bentoml.service(
    name="kitchenware",
    traffic={"timeout": settings.timeout_s},
    # BentoML's own probe of the model service can hang a /readyz sent during start-up
    # until the request timeout (then 500); __is_ready__ below asks with a deadline.
    runner_probe={"enabled": False},
    labels={"project": "kitchenware", "task": "image-classification"},
)
class Kitchenware:
    """Classify kitchenware photos (cup, glass, plate, spoon, fork, knife)."""

    model = bentoml.depends(KitchenwareModel)

    def __init__(self) -> None:
        self.served: ServedModel = locate_model(MODEL_REFERENCE)
        # A few decode threads: each may hold a large decoded image, and there are few cores.
        self.decode_limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 1))

    async def __is_ready__(self) -> bool:
        """Ready once the model service answers its /readyz (model loaded and warmed up)."""
        probe = getattr(self.model, "is_ready", None)
        if probe is None:  # in-process: the model service object exists, so it is loaded
            return True
        try:
            return bool(await asyncio.wait_for(probe(1), timeout=READY_PROBE_TIMEOUT_S))
        except Exception:  # unreachable or still starting: not ready yet
            return False

    async def _classify_arrays(self, batch: np.ndarray) -> np.ndarray | JSONResponse:
        """Probabilities from the model service, or a 503 when its queue is full."""
        for attempt in (1, 2):
            try:
                return np.asarray(await self.model.predict(batch))
            except BentoMLException as exc:
                if exc.error_code not in BUSY_STATUSES:
                    raise
                break
            except aiohttp.ClientConnectionError:
                # A pooled keep-alive connection the model server just closed: retry once
                # (predict has no side effects), then treat it as unavailable.
                if attempt == 2:
                    break
        BUSY_REJECTIONS.inc()
        return busy_response(settings.retry_after_s)

    async def _run(
        self, paths: list[Path], field: str, ctx: bentoml.Context, *, indexed: bool
    ) -> list[Classification] | JSONResponse:
        uploads = uploads_from(paths, getattr(ctx.request, "scope", None))
        meta = self.served.metadata
        batch, failures = await anyio.to_thread.run_sync(
            lambda: decode_uploads(
                uploads, field, meta.image_size, settings.max_image_pixels, indexed=indexed
            ),
            limiter=self.decode_limiter,
        )
        if failures:
            return decode_failure_response(failures)
        probabilities = await self._classify_arrays(batch)
        if isinstance(probabilities, JSONResponse):
            return probabilities
        return [
            classification(row, meta, self.served.tag, settings.top_k, upload.filename)
            for row, upload in zip(probabilities, uploads, strict=True)
        ]

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
        return BatchClassification(model=self.served.tag, count=len(results), results=results)


def _with_status(ctx: bentoml.Context, response: JSONResponse) -> JSONResponse:
    """BentoML overwrites a returned response's status with ctx's when an API takes ctx."""
    ctx.response.status_code = response.status_code
    return response


# mypy does not see that @bentoml.service turns the class into a bentoml.Service.
cast("bentoml.Service[Kitchenware]", Kitchenware).add_asgi_middleware(
    UploadGate,
    routes={
        "/classify": FileField("image", max_files=1),
        "/classify_batch": FileField(
            "images",
            max_files=settings.max_batch_files,
            limit_setting="KITCHENWARE_MAX_BATCH_FILES",
        ),
    },
    max_upload_bytes=settings.max_upload_bytes,
    on_reject=count_rejection,
)
