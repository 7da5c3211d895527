"""The feedback loop behind the API: what /classify records, /feedback stores, /explain draws.

service.py calls these; they hold the logic so the service stays a thin BentoML class.
Blocking work (database, files, PNG encoding) is done in threads by the async wrappers.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from kitchenware.core.preprocessing import ImageDecodeError, decode_image, to_model_input
from kitchenware.serving import docspage
from kitchenware.serving.explain import (
    ExplainError,
    ExplainResponse,
    Explanation,
    choose_method,
    explain_array,
    heatmap_image,
    overlay_image,
    png_bytes,
)
from kitchenware.serving.feedback import (
    FeedbackError,
    FeedbackStore,
    validate_label,
    validate_note,
)
from kitchenware.serving.predictionlog import log_predictions, prediction_record
from kitchenware.serving.uploads import FileField

logger = logging.getLogger("kitchenware.loop")

# The upload gate's rules for the loop's routes (same byte, pixel and format limits).
FEEDBACK_FIELDS = FileField(
    "image", max_files=1, text_fields=("label", "request_id", "index", "note"), optional=True
)
EXPLAIN_FIELDS = FileField("image", max_files=1, text_fields=("label", "method"))


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


def error_response(status: int, reason: str, message: str, **details: Any) -> JSONResponse:
    return JSONResponse({"error": message, "reason": reason, **details}, status_code=status)


class FeedbackLoop:
    """Prediction log + feedback store + heatmap answers for one served model."""

    def __init__(self, settings: Any, model_tag: str, class_names: list[str], backend: str):
        self.settings = settings
        self.model_tag = model_tag
        self.class_names = list(class_names)
        self.backend = backend
        self.store: FeedbackStore | None = None
        self.store_error = ""
        try:
            self.store = FeedbackStore.from_settings(settings)
            logger.info("feedback store: %s", self.store.describe())
        except Exception as exc:  # predictions still work; /feedback answers 503 and says why
            self.store_error = f"{type(exc).__name__}: {exc}"
            logger.exception("feedback store unavailable; /feedback will answer 503")
        docspage.RUNTIME.update(model=model_tag, classes=self.class_names, backend=backend)

    def set_backend(self, backend: str) -> None:
        """Once the model has loaded: the backend that answers (auto resolves then)."""
        self.backend = backend
        docspage.RUNTIME["backend"] = backend

    # -- /classify ------------------------------------------------------------------------

    def record(
        self,
        request_id: str,
        images: list[Path],
        probabilities: np.ndarray,
        latency_ms: float,
    ) -> None:
        """Log and keep every prediction of one request (blocking)."""
        records, blobs = [], []
        for position, (path, row) in enumerate(zip(images, probabilities, strict=True)):
            data = Path(path).read_bytes()
            scores = dict(zip(self.class_names, (float(p) for p in row), strict=True))
            records.append(
                prediction_record(
                    request_id, position, data, scores, self.model_tag, self.backend, latency_ms
                )
            )
            blobs.append(data)
        log_predictions(self.settings.prediction_log, records)
        if self.store is not None:
            try:
                self.store.record_predictions(records, blobs)
            except Exception:  # a full disk must not fail the prediction itself
                logger.exception("could not keep predictions of %s for feedback", request_id)

    async def arecord(
        self, request_id: str | None, images: list[Path], probabilities: np.ndarray, ms: float
    ) -> None:
        if request_id:
            await anyio.to_thread.run_sync(self.record, request_id, images, probabilities, ms)

    # -- /feedback ------------------------------------------------------------------------

    def feedback(
        self,
        *,
        label: str | None,
        request_id: str | None,
        index: int,
        image: Path | None,
        note: str | None,
    ) -> FeedbackAnswer | JSONResponse:
        """Validate, store and acknowledge one correction (blocking)."""
        try:
            label = validate_label(label, self.class_names)
            note = validate_note(note, self.settings.feedback_note_max_chars)
            if self.store is None:
                return error_response(
                    503,
                    "feedback_store_unavailable",
                    f"The feedback store is unavailable ({self.store_error}); check "
                    "KITCHENWARE_FEEDBACK_URL.",
                )
            record = self.store.add_feedback(
                label,
                request_id=(request_id or "").strip() or None,
                position=index,
                image=Path(image).read_bytes() if image is not None else None,
                note=note,
                max_pixels=self.settings.max_image_pixels,
            )
        except FeedbackError as exc:
            return JSONResponse(exc.body(), status_code=exc.status_code)
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

    async def afeedback(self, **kwargs: Any) -> FeedbackAnswer | JSONResponse:
        return await anyio.to_thread.run_sync(lambda: self.feedback(**kwargs))

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
    ) -> ExplainResponse | JSONResponse:
        """Decode, compute the heatmap with the serving backend, draw it (blocking)."""
        try:
            chosen = choose_method(self.settings.explain_method, backend, method or None)
            photo, array = self.explain_input(image, backend.image_size)
            explanation = explain_array(
                backend, array, method=chosen, label=label or None, grid=self.settings.explain_grid
            )
        except ExplainError as exc:
            return explain_error_response(exc)
        except ImageDecodeError as exc:
            return decode_error_response(exc)
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
        return await anyio.to_thread.run_sync(
            lambda: self.explain(backend, image, label, method), limiter=limiter
        )


def decode_error_response(exc: ImageDecodeError) -> JSONResponse:
    return error_response(exc.status_code, exc.reason, str(exc))


def explain_error_response(exc: ExplainError) -> JSONResponse:
    return error_response(exc.status_code, exc.reason, str(exc))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
