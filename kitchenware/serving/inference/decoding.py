"""What the HTTP service does around the model: response schemas, decoding uploads, errors.

service.py stays a thin pair of BentoML classes over these functions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from kitchenware.runtime.metadata import ModelMetadata, read_metadata
from kitchenware.runtime.preprocessing import ImageDecodeError, preprocess_bytes
from kitchenware.serving.http.errors import error_answer, error_body
from kitchenware.serving.http.fileparts import UploadedFile
from kitchenware.serving.http.uploads import UPLOAD_NAMES_SCOPE_KEY
from kitchenware.serving.inference.preflight import locate_checked
from kitchenware.serving.metrics import DECODE_SECONDS, PREDICTIONS, count_rejection


class LabelScore(BaseModel):
    label: str
    probability: float


class Classification(BaseModel):
    """The answer for one image."""

    label: str = Field(description="The predicted class.")
    confidence: float = Field(description="Probability of the predicted class.")
    probabilities: dict[str, float] = Field(description="Probability of every class.")
    top_k: list[LabelScore] = Field(description="The most probable classes, best first.")
    model: str = Field(description="Tag of the model that answered.")
    runtime: str | None = Field(
        None, description="Inference backend that answered, e.g. openvino-int8 or tensorflow."
    )
    filename: str | None = Field(None, description="The uploaded file's name, if it had one.")
    request_id: str | None = Field(
        None, description="Id of this request (also the X-Request-ID header); send it to /feedback."
    )


class BatchClassification(BaseModel):
    """The answers for a batch, one per image in request order."""

    model: str
    runtime: str | None = None
    count: int
    results: list[Classification]
    request_id: str | None = Field(
        None,
        description="Id of this request (X-Request-ID); send it and an index to /feedback.",
    )


@dataclass(frozen=True)
class ServedModel:
    """What the HTTP side needs to know about the model, read from its metadata."""

    tag: str
    path: Path
    metadata: ModelMetadata


def locate_model(reference: Any) -> ServedModel:
    """Resolve a class-level `bentoml.models.BentoModel` to a stored, checked model."""
    path = locate_checked(reference)  # ModelUnusable names the file when it cannot be served
    return ServedModel(tag=str(reference.stored.tag), path=path, metadata=read_metadata(path))


def decode_upload(data: bytes, image_size: int, name: str, max_pixels: int) -> np.ndarray:
    """Upload bytes -> uint8 (size, size, 3); uint8 is lossless here and 4x smaller to send."""
    started = time.perf_counter()
    array = preprocess_bytes(data, image_size, name=name, max_pixels=max_pixels)
    DECODE_SECONDS.observe(time.perf_counter() - started)
    return array.astype(np.uint8)


@dataclass(frozen=True)
class Upload:
    """One uploaded image: its bytes (an endpoint's file part) or a file (a task's), and the
    client's file name."""

    source: bytes | Path
    filename: str | None

    @property
    def path(self) -> Path:
        """The file on disk (a task's upload, a zip member); a file part has none."""
        if isinstance(self.source, bytes):
            raise TypeError("this upload is in memory, not on disk")
        return self.source

    def read(self) -> bytes:
        return self.source if isinstance(self.source, bytes) else self.source.read_bytes()

    def label(self, field: str, index: int | None = None) -> str:
        """How an error message names this upload: image 'cup.jpg' or images[2] 'x.png'."""
        where = field if index is None else f"{field}[{index}]"
        return f"{where} '{self.filename}'" if self.filename else where


def uploads_from(files: Sequence[PurePath], scope: dict[str, Any] | None) -> list[Upload]:
    """Pair the endpoint's files (in memory, or BentoML's temp files) with the client's
    filenames recorded by UploadGate."""
    names = (scope or {}).get(UPLOAD_NAMES_SCOPE_KEY)
    if not isinstance(names, list) or len(names) != len(files):
        names = [None] * len(files)
    return [
        Upload(file.data if isinstance(file, UploadedFile) else Path(file), name)
        for file, name in zip(files, names, strict=True)
    ]


@dataclass
class DecodeFailure:
    index: int
    filename: str | None
    error: ImageDecodeError

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "filename": self.filename,
            "reason": self.error.reason,
            "error": str(self.error),
        }


def decode_one(
    upload: Upload, index: int, field: str, image_size: int, max_pixels: int, *, indexed: bool
) -> np.ndarray | DecodeFailure:
    """One upload -> uint8 (size, size, 3), or why it failed (blocking; run in a thread)."""
    try:
        name = upload.label(field, index if indexed else None)
        return decode_upload(upload.read(), image_size, name, max_pixels)
    except ImageDecodeError as exc:
        count_rejection(exc.reason)
        return DecodeFailure(index, upload.filename, exc)


def stack_decoded(
    decoded: Sequence[np.ndarray | DecodeFailure],
) -> tuple[np.ndarray, list[DecodeFailure]]:
    """One request's decoded photos -> (n, size, size, 3), or its failures."""
    failures = [d for d in decoded if isinstance(d, DecodeFailure)]
    if failures or not decoded:
        return np.zeros((0,), np.uint8), failures
    return np.stack([d for d in decoded if isinstance(d, np.ndarray)]), []


def decode_failure_response(failures: list[DecodeFailure]) -> JSONResponse:
    """400 (or 413 when every failure is over the pixel limit) naming each bad image."""
    status = 413 if all(f.error.status_code == 413 for f in failures) else 400
    # The headline is the first failure of the answer's own status: a 400 never leads with
    # "too many pixels" because an unreadable image came later in the batch.
    first = next(f for f in failures if f.error.status_code == status)
    message = str(first.error)
    if len(failures) > 1:
        message += f" ({len(failures) - 1} more image(s) failed too; see 'failures'.)"
    body = error_body(message, first.error.reason)
    if len(failures) > 1 or first.index > 0:
        body["failures"] = [f.as_json() for f in failures]
    return error_answer(body, status)


def classification(
    probabilities: np.ndarray,
    metadata: ModelMetadata,
    model_tag: str,
    top_k: int,
    filename: str | None = None,
    runtime: str | None = None,
    request_id: str | None = None,
) -> Classification:
    """One row of model output -> the response for that image."""
    scores = [float(p) for p in probabilities]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    best = order[0]
    label = metadata.class_names[best]
    PREDICTIONS.labels(label=label).inc()
    return Classification(
        label=label,
        confidence=scores[best],
        probabilities=dict(zip(metadata.class_names, scores, strict=True)),
        top_k=[
            LabelScore(label=metadata.class_names[i], probability=scores[i]) for i in order[:top_k]
        ],
        model=model_tag,
        runtime=runtime,
        filename=filename,
        request_id=request_id,
    )


QUEUE_FULL = "The server is busy: the inference queue is full. Retry in a few seconds."


def busy_response(retry_after_s: int, message: str = QUEUE_FULL) -> JSONResponse:
    return error_answer(
        error_body(message, "busy", retry_after_s=retry_after_s),
        503,
        {"Retry-After": str(retry_after_s)},
    )
