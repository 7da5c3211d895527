"""The prediction log: one record per classified image, through `bentoml.monitor`.

BentoML's default monitor exporter writes rotating JSON lines under
`monitoring/<name>/data/`; its `otlp` type sends the same records to an OpenTelemetry
collector (see the README). Each record carries the request id, so corrections sent to
/feedback join the predictions they correct.

Shadow mode (serving/inference/shadow.py) adds records of its own to the same log:
`record` "shadow", the served label beside the candidate's (`shadow_*`). They are separate
records because the candidate answers after the prediction's record is written, or never (shed
under load); and they share this log because BentoML's default exporter writes every monitor
of a process through one logger, so a second monitor name would take over the first's file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from kitchenware.runtime.preprocessing import ImageDecodeError, open_image


@dataclass(frozen=True)
class PredictionRecord:
    """What is known about one prediction; also the row /feedback looks up by request id."""

    request_id: str
    position: int  # index in a /classify_batch request, 0 for /classify
    created_at: float  # unix time
    image_sha256: str
    image_format: str  # Pillow's name: JPEG, PNG, ...
    width: int
    height: int
    label: str
    confidence: float
    probabilities: dict[str, float]
    model: str
    backend: str
    latency_ms: float
    # Shadow mode: a "shadow" record holds the served answer (label to model, as above) and
    # the candidate's (shadow_*); its backend and latency_ms are the candidate's run, its
    # image fields empty (the prediction's own record has them: join on request id, position).
    record: str = "prediction"
    shadow_model: str = ""
    shadow_label: str = ""
    shadow_confidence: float = 0.0

    def as_log(self) -> dict[str, Any]:
        return asdict(self)


def image_facts(data: bytes) -> tuple[str, str, int, int]:
    """(sha256, format, width, height) of image bytes, from the header only."""
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        image = open_image(data, max_pixels=None)
    except ImageDecodeError:
        return sha256, "", 0, 0
    return sha256, str(image.format or ""), int(image.width), int(image.height)


def prediction_record(
    request_id: str,
    position: int,
    data: bytes,
    probabilities: dict[str, float],
    model: str,
    backend: str,
    latency_ms: float,
    created_at: float | None = None,
) -> PredictionRecord:
    sha256, fmt, width, height = image_facts(data)
    label = max(probabilities, key=lambda name: probabilities[name])
    return PredictionRecord(
        request_id=request_id,
        position=position,
        created_at=time.time() if created_at is None else created_at,
        image_sha256=sha256,
        image_format=fmt,
        width=width,
        height=height,
        label=label,
        confidence=float(probabilities[label]),
        probabilities={k: float(v) for k, v in probabilities.items()},
        model=model,
        backend=backend,
        latency_ms=round(latency_ms, 3),
    )


def log_predictions(name: str, records: list[PredictionRecord]) -> None:
    """One bentoml.monitor record per prediction, one monitor call per batch; `name` empty
    turns the log off. Raises what the monitor raises (the recorder counts and logs it).

    Only the roles and types BentoML supports (feature/prediction, categorical/numerical):
    any other makes it log a "not officially supported" warning per column per record."""
    if not name or not records:
        return
    import bentoml

    columns: list[tuple[str, str, str, Callable[[PredictionRecord], Any]]] = [
        # BentoML reserves the column "request_id" for its trace span id; ours (the
        # X-Request-ID that /feedback takes) is "kitchenware_request_id".
        ("kitchenware_request_id", "feature", "categorical", lambda r: r.request_id),
        ("position", "feature", "numerical", lambda r: r.position),
        ("image_sha256", "feature", "categorical", lambda r: r.image_sha256),
        ("width", "feature", "numerical", lambda r: r.width),
        ("height", "feature", "numerical", lambda r: r.height),
        ("label", "prediction", "categorical", lambda r: r.label),
        ("confidence", "prediction", "numerical", lambda r: r.confidence),
        ("probabilities", "prediction", "categorical", lambda r: json.dumps(r.probabilities)),
        ("model", "feature", "categorical", lambda r: r.model),
        ("backend", "feature", "categorical", lambda r: r.backend),
        ("latency_ms", "feature", "numerical", lambda r: r.latency_ms),
        ("record", "feature", "categorical", lambda r: r.record),
        ("shadow_model", "feature", "categorical", lambda r: r.shadow_model),
        ("shadow_label", "prediction", "categorical", lambda r: r.shadow_label),
        ("shadow_confidence", "prediction", "numerical", lambda r: r.shadow_confidence),
    ]
    with bentoml.monitor(name) as monitor:
        for column, role, kind, value in columns:
            monitor.log_batch([value(record) for record in records], column, role, kind)
