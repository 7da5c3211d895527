"""The feedback loop behind the API: what /classify records, /feedback stores, /explain draws.

service.py calls these; they hold the logic so the service stays a thin BentoML class.
Blocking work (database, files, PNG encoding) is done in threads by the async wrappers.
Predictions are kept in the background (recorder.py): arecord only queues them. Corrections
are committed before they are acknowledged, in a few dedicated threads with a deadline, so a
hung store answers 503 + Retry-After instead of holding requests (storefaults.py).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from kitchenware.runtime.preprocessing import ImageDecodeError, decode_image, to_model_input
from kitchenware.serving.feedback.explain import (
    ExplainError,
    ExplainResponse,
    Explanation,
    choose_method,
    explain_array,
    heatmap_image,
    overlay_image,
    png_bytes,
)
from kitchenware.serving.feedback.predictionlog import (
    PredictionLogBound,
    PredictionRecord,
    prediction_record,
)
from kitchenware.serving.feedback.recorder import (
    FLUSH_INTERVAL_S,
    PredictionRecorder,
    QueuedPrediction,
)
from kitchenware.serving.feedback.store import (
    FeedbackError,
    FeedbackRecord,
    FeedbackStore,
    default_url,
    not_kept_error,
    redacted,
    validate_label,
    validate_note,
)
from kitchenware.serving.feedback.storefaults import (
    STORE_DEADLINE_S,
    StoreHealth,
    StoreOpener,
    StoreUnavailable,
    is_store_fault,
)
from kitchenware.serving.http.errors import ClientError, error_answer, error_body

logger = logging.getLogger("kitchenware.loop")

# A correction by id may race its prediction's background write (this worker's or
# another's, or another's note of a prediction not kept): before a 404, look again.
UNKNOWN_ID_GRACE_S = 2.0  # > RETRY_S + a write: another worker's notes land
# Threads that may sit in a hung store call: few, so a hung database cannot take the
# threads decoding and explaining need; past them, /feedback waits its deadline, then 503.
STORE_THREADS = 4


class FeedbackAnswer(BaseModel):
    """A stored correction (answered only after it is committed)."""

    feedback_id: int = Field(description="Id of the stored correction.")
    label: str = Field(description="The correct label, as stored.")
    predicted_label: str | None = Field(None, description="What the model had said.")
    prediction_request_id: str | None = Field(
        None, description="The request id of the corrected prediction."
    )
    image_sha256: str
    message: str
    request_id: str | None = Field(None, description="Id of this /feedback request.")


def error_response(status: int, reason: str, message: str, **details: Any) -> JSONResponse:
    """An error answer of /feedback or /explain, with this request's id (error_answer reads
    it from the request's context): built by the async wrappers below, on the event loop,
    from what the blocking work in a thread returned."""
    headers = {"Retry-After": str(details["retry_after_s"])} if "retry_after_s" in details else None
    return error_answer(error_body(message, reason, **details), status, headers)


def client_error_response(exc: ClientError) -> JSONResponse:
    return error_response(exc.status_code, exc.reason, exc.message, **exc.details)


def refusal_response(exc: ClientError | ExplainError | ImageDecodeError) -> JSONResponse:
    if isinstance(exc, ClientError):
        return client_error_response(exc)
    return error_response(exc.status_code, exc.reason, str(exc))


class FeedbackLoop:
    """Prediction log + feedback store + heatmap answers for one served model."""

    def __init__(self, settings: Any, model_tag: str, class_names: list[str], backend: str):
        self.settings = settings
        self.model_tag = model_tag
        self.class_names = list(class_names)
        self.backend = backend
        url = redacted(settings.feedback_url or default_url())
        self.health = StoreHealth(
            f"the feedback store {url}",
            "predictions are not kept and /feedback answers 503 until it recovers",
        )
        self.store = StoreOpener(lambda: FeedbackStore.from_settings(settings), url, self.health)
        # Opened now, to say where it is; if that fails it is tried again on use: predictions
        # still work and /feedback answers 503 saying why.
        with contextlib.suppress(StoreUnavailable):
            logger.info("feedback store: %s", self.store.get().describe())
        self.recorder = PredictionRecorder(
            self.store,
            self.describe,
            settings.prediction_log,
            self.health,
            PredictionLogBound.from_settings(settings),
        )
        self.store_threads = anyio.CapacityLimiter(STORE_THREADS)

    def close(self) -> None:
        """At shutdown: write the predictions still queued, then close the store."""
        self.recorder.close()
        if self.store.store is not None:
            self.store.store.close()

    def set_backend(self, backend: str) -> None:
        """Once the model has loaded: the backend that answers (auto resolves then)."""
        self.backend = backend

    # -- /classify ------------------------------------------------------------------------

    def describe(self, item: QueuedPrediction) -> PredictionRecord:
        """The record of one queued prediction (hash and header read in the writer thread)."""
        scores = dict(zip(self.class_names, (float(p) for p in item.probabilities), strict=True))
        return prediction_record(
            item.request_id,
            item.position,
            item.data,
            scores,
            self.model_tag,
            self.backend,
            item.latency_ms,
            created_at=item.created_at,
        )

    async def arecord(
        self,
        request_id: str | None,
        photos: Sequence[bytes | Path],
        probabilities: np.ndarray,
        ms: float,
    ) -> None:
        """Queue the predictions of one request for keeping; returns at once (photos on disk
        are read now: BentoML deletes its temp files when the request ends)."""
        if not request_id:
            return
        data: list[bytes]
        if all(isinstance(photo, bytes) for photo in photos):  # in memory already
            data = [photo for photo in photos if isinstance(photo, bytes)]
        elif len(photos) == 1:  # one file, just written and in the page cache: read it here
            data = [_photo_bytes(photos[0])]
        else:  # a batch may be tens of MB: not on the event loop
            data = await anyio.to_thread.run_sync(lambda: [_photo_bytes(p) for p in photos])
        self.recorder.submit(request_id, data, probabilities, ms)

    # -- /feedback ------------------------------------------------------------------------

    def feedback(
        self,
        *,
        label: str | None,
        request_id: str | None,
        index: int,
        image: Path | bytes | None,
        note: str | None,
    ) -> FeedbackAnswer | ClientError:
        """Validate, store and acknowledge one correction (blocking); a refusal is returned."""
        try:
            label = validate_label(label, self.class_names)
            note = validate_note(note, self.settings.feedback_note_max_chars)
            request_id = (request_id or "").strip() or None
            data = Path(image).read_bytes() if isinstance(image, Path) else image
            record = self.store_correction(label, request_id, index, data, note)
        except ClientError as exc:
            return exc
        logger.info(
            "feedback %d: %s (model said %s) for %s",
            record.id,
            record.label,
            record.predicted_label,
            record.request_id or record.image_sha256[:12],
        )
        return FeedbackAnswer(
            feedback_id=record.id,
            label=record.label,
            predicted_label=record.predicted_label,
            prediction_request_id=record.request_id,
            image_sha256=record.image_sha256,
            message=f"Stored: this photo is a {record.label}.",
        )

    def store_correction(
        self, label: str, request_id: str | None, index: int, image: bytes | None, note: str | None
    ) -> FeedbackRecord:
        """Commit one correction; a store fault becomes StoreUnavailable (503 + Retry-After)."""
        store = self.store.get()
        try:
            record = self.add_feedback(store, label, request_id, index, image, note)
        except Exception as exc:
            if isinstance(exc, ClientError) or not is_store_fault(exc):
                raise
            cause = self.health.failed(exc, "add_feedback")
            store.reopen()  # the next call makes new connections
            raise StoreUnavailable(self.store.name, cause) from exc
        self.health.worked()
        return record

    def add_feedback(
        self,
        store: FeedbackStore,
        label: str,
        request_id: str | None,
        index: int,
        image: bytes | None,
        note: str | None,
    ) -> FeedbackRecord:
        """A prediction not (yet) kept is waited for or named, never a false 404."""
        if request_id is not None and self.recorder.pending(request_id):
            self.recorder.flush(STORE_DEADLINE_S / 2)  # its prediction is being written here
        grace = time.monotonic() + UNKNOWN_ID_GRACE_S
        while True:
            try:
                return store.add_feedback(
                    label,
                    request_id=request_id,
                    position=index,
                    image=image,
                    note=note,
                    max_pixels=self.settings.max_image_pixels,
                )
            except FeedbackError as exc:
                if exc.reason != "unknown_request_id" or request_id is None:
                    raise
                where = f"request_id '{request_id}'" + (f" (position {index})" if index else "")
                if (reason := self.recorder.unkept_reason(request_id, index)) is not None:
                    raise not_kept_error(where, reason) from exc
                if time.monotonic() >= grace:
                    # Unknown here; a store that cannot write now may have lost it (in any
                    # worker): 503 then, a 404 only when the store works.
                    store.check_writable()
                    raise
            time.sleep(FLUSH_INTERVAL_S)  # another worker may be writing it now

    async def afeedback(self, **kwargs: Any) -> FeedbackAnswer | JSONResponse:
        """The correction, or 503 + Retry-After once STORE_DEADLINE_S passed (a hung store:
        its thread is left to finish; an answer that late was never acknowledged)."""
        with anyio.move_on_after(STORE_DEADLINE_S):
            result = await anyio.to_thread.run_sync(
                lambda: self.feedback(**kwargs),
                limiter=self.store_threads,
                abandon_on_cancel=True,
            )
            return client_error_response(result) if isinstance(result, ClientError) else result
        cause = self.health.failed(TimeoutError(), "add_feedback")
        return client_error_response(StoreUnavailable(self.store.name, cause))

    # -- /explain -------------------------------------------------------------------------

    def explain_input(self, image: Path, image_size: int) -> tuple[Any, np.ndarray]:
        """(the upright RGB photo at full size, the model input as uint8); blocking."""
        photo = decode_image(
            Path(image).read_bytes(), name="image", max_pixels=self.settings.max_image_pixels
        )
        return photo, to_model_input(photo, image_size).astype(np.uint8)

    def explain_answer(self, photo: Any, explanation: Explanation) -> ExplainResponse:
        width, height = photo.size
        index = explanation.class_index
        probabilities = explanation.probabilities
        return ExplainResponse(
            label=self.class_names[index],
            probability=float(probabilities[index]),
            predicted_label=self.class_names[int(np.argmax(probabilities))],
            method=explanation.method,
            width=width,
            height=height,
            overlay_png=_b64(png_bytes(overlay_image(photo, explanation.heatmap))),
            heatmap_png=_b64(png_bytes(heatmap_image(explanation.heatmap, width, height))),
            model=self.model_tag,
            backend=self.backend,
            elapsed_ms=round(explanation.elapsed_ms, 1),
        )

    def explain(
        self, backend: Any, image: Path, label: str | None, method: str | None
    ) -> ExplainResponse | ExplainError | ImageDecodeError:
        """Decode, compute the heatmap with the serving backend, draw it (blocking); a
        refusal is returned."""
        try:
            chosen = choose_method(self.settings.explain_method, backend, method or None)
            photo, array = self.explain_input(image, backend.image_size)
            explanation = explain_array(
                backend, array, method=chosen, label=label or None, grid=self.settings.explain_grid
            )
        except (ExplainError, ImageDecodeError) as exc:
            return exc
        logger.info(
            "explain: %s for %s in %.0f ms",
            explanation.method,
            self.class_names[explanation.class_index],
            explanation.elapsed_ms,
        )
        return self.explain_answer(photo, explanation)

    async def aexplain(
        self, backend: Any, image: Path, label: str | None, method: str | None, limiter: Any
    ) -> ExplainResponse | JSONResponse:
        result = await anyio.to_thread.run_sync(
            lambda: self.explain(backend, image, label, method), limiter=limiter
        )
        return result if isinstance(result, ExplainResponse) else refusal_response(result)


def _photo_bytes(photo: Path | bytes) -> bytes:
    return photo if isinstance(photo, bytes) else Path(photo).read_bytes()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
