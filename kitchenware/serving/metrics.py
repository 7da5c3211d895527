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


BATCH_SIZE = bentoml.metrics.Histogram(
    name="kitchenware_batch_size",
    documentation="Images per model call (the in-process batcher merges concurrent requests).",
    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64),
)
INFERENCE_SECONDS = bentoml.metrics.Histogram(
    name="kitchenware_inference_seconds",
    documentation="Time of one model call (one batch).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
# An info metric as Prometheus does it: constant 1, the facts in the labels (prometheus_client's
# Info type does not work in the multiprocess mode `bentoml serve` runs in).
RUNTIME_LABELS = ("backend", "runtime", "precision", "performance_hint", "streams", "threads")
RUNTIME_INFO = bentoml.metrics.Gauge(
    name="kitchenware_runtime_info",
    documentation="The inference backend serving the model: name, precision, streams, threads.",
    labelnames=[*RUNTIME_LABELS, "model"],
    multiprocess_mode="max",
)


# The start-up check (runtime/startup_check): the gate rule run again on this CPU before ready.
STARTUP_CHECK = bentoml.metrics.Gauge(
    name="kitchenware_startup_check_passed",
    documentation="1 if the served backend passed the accuracy check on this CPU at start, "
    "0 if it was served although it failed (a named backend with allow_failed_gate).",
    labelnames=["backend", "model"],
    multiprocess_mode="min",
)
BACKEND_FALLBACK = bentoml.metrics.Gauge(
    name="kitchenware_backend_fallback",
    documentation="1 for each artifact `auto` skipped at start because it failed to load or "
    "failed the accuracy check on this CPU; `served` is what answers instead.",
    labelnames=["skipped", "served", "model"],
    multiprocess_mode="max",
)


def record_runtime(info: dict[str, str], model_tag: str) -> None:
    labels = {key: info.get(key, "") for key in RUNTIME_LABELS}
    RUNTIME_INFO.labels(**labels, model=model_tag).set(1)
    check = info.get("startup_check", "")
    if check.startswith(("passed", "failed")):
        STARTUP_CHECK.labels(backend=labels["backend"], model=model_tag).set(
            int(check.startswith("passed"))
        )
    for skipped in filter(None, info.get("fallback_from", "").split(",")):
        BACKEND_FALLBACK.labels(skipped=skipped, served=labels["backend"], model=model_tag).set(1)


# The feedback store (serving/feedback/recorder.py, storefaults.py).
PREDICTIONS_NOT_KEPT = bentoml.metrics.Counter(
    name="kitchenware_predictions_not_kept_total",
    documentation="Predictions answered but not kept for feedback by id (queue full: the store "
    "is slower than the traffic; store_failing; photo_failed: row kept, photo not).",
    labelnames=["reason"],
)
STORE_ERRORS = bentoml.metrics.Counter(
    name="kitchenware_store_errors_total",
    documentation="Feedback store calls that failed (database or photo folder), by operation.",
    labelnames=["operation"],
)
STORE_FAILING = bentoml.metrics.Gauge(
    name="kitchenware_store_failing",
    documentation="1 while the feedback store is failing (in any worker), else 0.",
    multiprocess_mode="max",
)


# Shadow mode (serving/inference/shadow.py): a candidate beside the served model.
SHADOW_AGREEMENTS = bentoml.metrics.Counter(
    name="kitchenware_shadow_agreements_total",
    documentation="Shadowed images on which the candidate gave the served label.",
    labelnames=["candidate"],
)
SHADOW_DISAGREEMENTS = bentoml.metrics.Counter(
    name="kitchenware_shadow_disagreements_total",
    documentation="Shadowed images on which the candidate differed, by served and shadow label.",
    labelnames=["candidate", "served", "shadow"],
)
SHADOW_SHED = bentoml.metrics.Counter(
    name="kitchenware_shadow_shed_total",
    documentation="Sampled images not shadowed: queue_full, served_busy (the served model had "
    "work waiting), not_ready (the candidate not loaded), failed (its call raised).",
    labelnames=["candidate", "reason"],
)
SHADOW_READY = bentoml.metrics.Gauge(
    name="kitchenware_shadow_ready",
    documentation="1 once the shadow candidate is loaded and checked in a worker, 0 if it could "
    "not be loaded (the log says why).",
    labelnames=["candidate", "backend"],
    multiprocess_mode="max",
)


# The disk bounds (feedback/store.py, feedback/predictionlog.py).
DISK_REMOVED = bentoml.metrics.Counter(
    name="kitchenware_disk_removed_total",
    documentation="Kept data removed by the retention bounds: kind (photo, "
    "prediction, correction, prediction_log_file), reason (age: past its retention; size: "
    "past its folder's size bound, oldest first).",
    labelnames=["kind", "reason"],
)
DISK_REMOVED_BYTES = bentoml.metrics.Counter(
    name="kitchenware_disk_removed_bytes_total",
    documentation="Bytes of the files counted in kitchenware_disk_removed_total.",
    labelnames=["kind", "reason"],
)


def count_removed(kind: str, reason: str, count: int, size: int = 0) -> None:
    if count:
        DISK_REMOVED.labels(kind=kind, reason=reason).inc(count)
    if size:
        DISK_REMOVED_BYTES.labels(kind=kind, reason=reason).inc(size)
