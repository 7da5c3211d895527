"""The classify pipeline: model loading and readiness, then the batcher (decode + model) ->
answers.

service.py's endpoints are one call into `Pipeline` each. The model loads in a thread:
BentoML starts answering HTTP only after the service's __init__ returns, and a /readyz
probe must get a prompt 503 while the model loads, not hang.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from starlette.responses import JSONResponse

from kitchenware.runtime.backends import Backend, load_backend
from kitchenware.serving.http.requestid import request_id_of
from kitchenware.serving.http.servertiming import note
from kitchenware.serving.inference.batching import MicroBatcher, QueueFull
from kitchenware.serving.inference.decoding import (
    BatchClassification,
    Classification,
    DecodeFailure,
    Upload,
    busy_response,
    classification,
    decode_failure_response,
    decode_one,
    locate_model,
    stack_decoded,
    uploads_from,
)
from kitchenware.serving.inference.shadow import ShadowRunner
from kitchenware.serving.inference.tasks import TaskLimits, classify_task, task_uploads
from kitchenware.serving.metrics import (
    BATCH_SIZE,
    BUSY_REJECTIONS,
    INFERENCE_SECONDS,
    record_runtime,
)
from kitchenware.serving.settings import ServiceSettings

logger = logging.getLogger("kitchenware.service")

# (request id, uploaded photos, probabilities, milliseconds): the prediction recorder's hook.
Record = Callable[[str | None, Sequence[bytes | Path], np.ndarray, float], Awaitable[None]]


class ServedFacts:
    """What answers (model tag, classes, backend), for the docs page and the upload page.

    One object per service, handed to the pages that show it; the backend is filled in
    once the model has loaded (`auto` resolves then).
    """

    def __init__(self) -> None:
        self.facts: dict[str, Any] = {}

    def update(self, **facts: Any) -> None:
        self.facts.update(facts)

    def __call__(self) -> dict[str, Any]:
        return dict(self.facts)


@dataclass
class Photos:
    """One request's photos for the batcher: uploads it decodes in its thread, or arrays a
    task decoded already."""

    uploads: list[Upload] = field(default_factory=list)
    form_field: str = "image"  # names a failed photo: "image", or "images[2]" when indexed
    indexed: bool = False
    arrays: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.uploads) if self.arrays is None else len(self.arrays)


@dataclass
class Classified:
    """The batcher's answer for one `Photos`: probabilities, or why its photos failed."""

    arrays: np.ndarray  # the decoded (n, size, size, 3) uint8 photos
    probabilities: np.ndarray | None = None
    failures: list[DecodeFailure] = field(default_factory=list)
    # The model call this request shared: its decode and infer seconds and its batch size.
    decode_s: float = 0.0
    infer_s: float = 0.0
    batch_size: int = 0


class Pipeline:
    """One served model: loaded in the background, classifying uploads through one batcher."""

    def __init__(self, settings: ServiceSettings, reference: Any, facts: ServedFacts) -> None:
        self.settings = settings
        self.served = locate_model(reference)
        self.facts = facts
        facts.update(
            model=self.served.tag,
            classes=list(self.served.metadata.class_names),
            backend=settings.backend,
        )
        # /explain and the async tasks decode in a few anyio threads (each may hold a large
        # decoded image); /classify's photos decode in the batcher's call, on `decoders`.
        self.decode_limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 1))
        self.decoders = ThreadPoolExecutor(os.cpu_count() or 1, "kitchenware-decode")
        self.loaded = threading.Event()
        self.load_error: BaseException | None = None
        # A candidate on sampled requests, off the answer path (KITCHENWARE_SHADOW_MODEL_TAG).
        self.shadow = ShadowRunner.from_settings(settings, self.served, self.served_busy)

    def start_loading(self, on_loaded: Callable[[str], None]) -> None:
        """Load and warm up the model in a thread; `on_loaded(backend name)` once ready."""
        threading.Thread(
            target=self._load, args=(on_loaded,), name="kitchenware-model-load", daemon=True
        ).start()

    def _load(self, on_loaded: Callable[[str], None]) -> None:
        settings = self.settings
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
        on_loaded(backend.name)
        self.facts.update(backend=backend.name)
        record_runtime(self.runtime, self.served.tag)
        logger.info(
            "serving %s with backend %s (%s)",
            self.served.tag,
            backend.name,
            ", ".join(f"{k}={v}" for k, v in self.runtime.items() if k != "backend"),
        )
        self.batcher: MicroBatcher[Photos, Classified] = MicroBatcher(
            self._decode_and_predict,
            max_batch_size=settings.max_batch_size,
            max_latency_ms=settings.max_latency_ms,
        )
        # Everything imported and loaded so far lives as long as the process: keep it out of
        # the collector's scans, which otherwise ran on the event loop every few requests.
        # No gc.collect() first: it took 68 ms of start-up to free 143 of 134k objects.
        gc.freeze()
        self.loaded.set()
        if self.shadow is not None:  # loads after the served model: never delays readiness
            self.shadow.start()

    def served_busy(self) -> bool:
        """Requests wait for the served model (shadow work then gives way)."""
        return self.batcher.estimated_wait_s() > 0

    def not_loaded(self) -> JSONResponse | None:
        """The 503 for a request that needs the loaded model before it has loaded."""
        if self.loaded.is_set():
            return None
        return busy_response(self.settings.retry_after_s, "The model is loading.")

    def _decode_and_predict(self, requests: Sequence[Photos]) -> list[Classified]:
        """The batcher's one call, in its worker thread: decode every request's uploads, then
        one model call for the requests whose photos all decoded."""
        meta, max_pixels = self.served.metadata, self.settings.max_image_pixels
        started = time.perf_counter()
        jobs = [
            (photos, index, upload)
            for photos in requests
            if photos.arrays is None
            for index, upload in enumerate(photos.uploads)
        ]

        def decode(job: tuple[Photos, int, Upload]) -> np.ndarray | DecodeFailure:
            photos, index, upload = job
            return decode_one(
                upload,
                index,
                photos.form_field,
                meta.image_size,
                max_pixels,
                indexed=photos.indexed,
            )

        # Pillow lets go of the GIL while it decodes: the photos of one call decode on all
        # cores, then the model runs on all cores; the two never compete.
        decoded = iter(self.decoders.map(decode, jobs) if len(jobs) > 1 else map(decode, jobs))
        answers: list[Classified] = []
        for photos in requests:
            if photos.arrays is not None:
                answers.append(Classified(photos.arrays))
                continue
            arrays, failures = stack_decoded([next(decoded) for _ in photos.uploads])
            answers.append(Classified(arrays, failures=failures))
        good = [answer for answer in answers if not answer.failures]
        if not good:
            return answers
        batch = good[0].arrays if len(good) == 1 else np.concatenate([a.arrays for a in good])
        decoded_at = time.perf_counter()
        probabilities = self.backend.predict_arrays(batch)
        infer_s = time.perf_counter() - decoded_at
        INFERENCE_SECONDS.observe(infer_s)
        BATCH_SIZE.observe(len(batch))
        offset = 0
        for answer in good:
            answer.probabilities = probabilities[offset : offset + len(answer.arrays)]
            answer.decode_s, answer.infer_s = decoded_at - started, infer_s
            answer.batch_size = len(batch)
            offset += len(answer.arrays)
        return answers

    async def _submit(self, photos: Photos) -> Classified | JSONResponse:
        """The batcher's answer, or a 503 while the model loads or when the queue is full."""
        settings = self.settings
        if not self.loaded.is_set():  # a request during start-up waits for the model
            await anyio.to_thread.run_sync(self.loaded.wait, float(settings.timeout_s))
        if not self.loaded.is_set():
            state = "failed to load; see the server log" if self.load_error else "still loading"
            return busy_response(settings.retry_after_s, f"The model is {state}. Retry later.")
        try:
            return await self.batcher.submit(photos, len(photos))
        except QueueFull:
            BUSY_REJECTIONS.inc()
            return busy_response(settings.retry_after_s)

    async def classify_arrays(self, batch: np.ndarray) -> np.ndarray | JSONResponse:
        """Probabilities for uint8 (n, size, size, 3) arrays, or a 503 when the queue is full."""
        done = await self._submit(Photos(arrays=batch))
        if isinstance(done, JSONResponse):
            return done
        assert done.probabilities is not None
        return done.probabilities

    async def classify(
        self, files: Sequence[PurePath], field: str, scope: Any, record: Record, *, indexed: bool
    ) -> list[Classification] | JSONResponse:
        """Decode and classify the uploads in one batcher call, record, answer."""
        started = time.perf_counter()
        uploads = uploads_from(files, scope)
        done = await self._submit(Photos(uploads, field, indexed))
        if isinstance(done, JSONResponse):
            return done
        if done.failures:
            return decode_failure_response(done.failures)
        assert done.probabilities is not None
        elapsed = time.perf_counter() - started
        note(scope, "queue", elapsed - done.decode_s - done.infer_s)
        note(scope, "decode", done.decode_s)
        note(scope, "infer", done.infer_s, f"batch of {done.batch_size}")
        elapsed_ms = elapsed * 1000
        request_id = request_id_of(scope)
        if self.shadow is not None:  # a queue append: the answer never waits for it
            self.shadow.offer(request_id, done.arrays, done.probabilities)
        sources = [upload.source for upload in uploads]
        await record(request_id, sources, done.probabilities, elapsed_ms)
        return self.results(done.probabilities, uploads, request_id)

    async def classify_task(
        self, paths: list[Path], request: Any
    ) -> BatchClassification | JSONResponse:
        """A big batch (photos and zips of photos), decoded and classified chunk by chunk."""
        settings = self.settings
        limits = TaskLimits(
            max_files=settings.max_task_files,
            max_unzipped_bytes=settings.max_task_unzipped_bytes,
            max_pixels=settings.max_image_pixels,
            chunk_size=settings.max_batch_size,
        )
        done = await classify_task(
            task_uploads(paths, request),
            limits,
            self.served.metadata.image_size,
            self.classify_arrays,
            self.decode_limiter,
        )
        if isinstance(done, JSONResponse):
            return done
        uploads, probabilities = done
        request_id = request_id_of(getattr(request, "scope", None))
        return self.batch(self.results(probabilities, uploads, request_id), request_id)

    def results(
        self, probabilities: np.ndarray, uploads: list[Upload], request_id: str | None
    ) -> list[Classification]:
        return [
            classification(
                row,
                self.served.metadata,
                self.served.tag,
                self.settings.top_k,
                upload.filename,
                self.backend.name,
                request_id,
            )
            for row, upload in zip(probabilities, uploads, strict=True)
        ]

    def batch(self, results: list[Classification], request_id: str | None) -> BatchClassification:
        return BatchClassification(
            model=self.served.tag,
            runtime=self.backend.name,
            count=len(results),
            results=results,
            request_id=request_id,
        )
