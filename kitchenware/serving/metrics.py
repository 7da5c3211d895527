"""The service's own Prometheus metrics, served at /metrics next to BentoML's defaults."""

from __future__ import annotations

import bentoml

PREDICTIONS = bentoml.metrics.Counter(
    name="kitchenware_predictions_total",
    documentation="Images classified, by predicted label.",
    labelnames=["label"],
)
REJECTED_UPLOADS = bentoml.metrics.Counter(
    name="kitchenware_rejected_uploads_total",
    documentation="Requests or images refused before inference, by reason.",
    labelnames=["reason"],
)
DECODE_SECONDS = bentoml.metrics.Histogram(
    name="kitchenware_decode_seconds",
    documentation="Time to decode and resize one uploaded image.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BUSY_REJECTIONS = bentoml.metrics.Counter(
    name="kitchenware_busy_rejections_total",
    documentation="Requests answered 503 because the inference queue was full.",
)


def count_rejection(reason: str) -> None:
    REJECTED_UPLOADS.labels(reason=reason).inc()
