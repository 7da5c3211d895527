"""Shadow mode: a candidate model answers a sample of live requests beside the served one.

`KITCHENWARE_SHADOW_MODEL_TAG` names a stored candidate (e.g. a retrain staged with
`--stage`). Each worker loads it after the served model, through the same runtime loading
(`load_backend(..., "auto")`: the cheapest backend that passes its start-up check on this
CPU), and runs it on a sampled share of /classify and /classify_batch requests.

Off the answer path by construction: the pipeline hands over the already decoded arrays and
the served probabilities after the answer is computed (`offer` is a queue append, never a
wait), and one low-priority thread per worker runs the candidate. The work is dropped first:
a sample that finds the small queue full (`shadow_max_queue` images), or that reaches the
front while the served model has requests waiting, is shed and counted. A duty cycle keeps
the thread's share of wall time running the candidate under `shadow_max_cpu_share`.

What it leaves: one record per shadowed image in the prediction log (`record` "shadow": the
served label beside the candidate's, predictionlog.py) and, in /metrics, agreements,
disagreements by (served, shadow) label, and sheds by reason.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kitchenware.runtime.backends import Backend, load_backend
from kitchenware.serving.feedback.predictionlog import PredictionRecord, log_predictions
from kitchenware.serving.inference.decoding import ServedModel, locate_model
from kitchenware.serving.metrics import (
    SHADOW_AGREEMENTS,
    SHADOW_DISAGREEMENTS,
    SHADOW_READY,
    SHADOW_SHED,
)
from kitchenware.serving.settings import ServiceSettings

logger = logging.getLogger("kitchenware.shadow")

LOWEST_PRIORITY = 19  # nice value of the shadow thread (Linux: per thread)


@dataclass(frozen=True)
class ShadowJob:
    request_id: str
    images: np.ndarray  # uint8 (n, size, size, 3), as decoded for the served model
    served: np.ndarray  # the served probabilities (n, classes)
    created_at: float


class ShadowRunner:
    """One candidate per worker, fed by `offer`, run by one background thread."""

    def __init__(
        self,
        settings: ServiceSettings,
        served: ServedModel,
        served_busy: Callable[[], bool],
        rng: random.Random | None = None,
    ) -> None:
        self.backend_name = ""  # the candidate's, once loaded
        self.tag = settings.shadow_model_tag
        self.sample = settings.shadow_sample
        self.max_queue = settings.shadow_max_queue
        self.cpu_share = settings.shadow_max_cpu_share
        self.log_name = settings.prediction_log
        self.served = served
        self.served_busy = served_busy
        self.rng = rng or random.Random()
        self.ready = False  # the candidate loaded and checked (never, if it cannot be)
        self._queue: deque[ShadowJob] = deque()
        self._queued_images = 0
        self._changed = threading.Condition()

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, served: ServedModel, served_busy: Callable[[], bool]
    ) -> ShadowRunner | None:
        return cls(settings, served, served_busy) if settings.shadow_model_tag else None

    def start(self) -> None:
        """Load the candidate and serve the queue, in a thread (after the served model)."""
        threading.Thread(target=self._run, name="kitchenware-shadow", daemon=True).start()

    # -- the answer path: never waits --------------------------------------------------

    def offer(self, request_id: str | None, images: np.ndarray, served: np.ndarray) -> None:
        """Queue a sampled request's images for the candidate, or shed them at once."""
        if not request_id or self.rng.random() >= self.sample:
            return
        count = len(images)
        if not self.ready:
            self._shed("not_ready", count)
            return
        with self._changed:
            if self._queued_images + count > self.max_queue:
                full = True
            else:
                full = False
                self._queue.append(ShadowJob(request_id, images, served, time.time()))
                self._queued_images += count
                self._changed.notify()
        if full:
            self._shed("queue_full", count)

    def _shed(self, reason: str, count: int) -> None:
        SHADOW_SHED.labels(candidate=self.tag, reason=reason).inc(count)

    # -- the shadow thread --------------------------------------------------------------

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux: normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
        backend = self._load()
        if backend is None:
            return
        while True:
            with self._changed:
                while not self._queue:
                    self._changed.wait()
                job = self._queue.popleft()
                self._queued_images -= len(job.images)
            if self.served_busy():  # served requests are waiting: they come first
                self._shed("served_busy", len(job.images))
                continue
            started = time.perf_counter()
            try:
                probabilities = backend.predict_arrays(job.images.astype(np.float32))
            except Exception:
                logger.exception("shadow %s failed on %d images", self.tag, len(job.images))
                self._shed("failed", len(job.images))
                continue
            elapsed = time.perf_counter() - started
            self._record(job, probabilities, elapsed * 1000)
            # The CPU budget: after t seconds of work, rest t * (1 / share - 1) seconds.
            time.sleep(elapsed * (1 / self.cpu_share - 1))

    def _load(self) -> Backend | None:
        import bentoml

        try:
            candidate = locate_model(bentoml.models.BentoModel(self.tag))
            mismatch = self._mismatch(candidate)
            if mismatch:
                raise ValueError(mismatch)
            backend = load_backend(candidate.path, "auto")
            backend.warm_up()
        except Exception as exc:
            SHADOW_READY.labels(candidate=self.tag, backend="").set(0)
            logger.error("shadow: %s cannot run in shadow, shadow mode is off: %s", self.tag, exc)
            return None
        self.tag = candidate.tag  # name:version, also when the setting said :latest
        self.backend_name = backend.name
        SHADOW_READY.labels(candidate=self.tag, backend=backend.name).set(1)
        logger.info(
            "shadow: %s runs on %.0f %% of requests with backend %s beside %s",
            self.tag,
            self.sample * 100,
            backend.name,
            self.served.tag,
        )
        self.ready = True
        return backend

    def _mismatch(self, candidate: ServedModel) -> str:
        """Why the candidate cannot take the served model's decoded arrays ('' if it can)."""
        ours, theirs = self.served.metadata, candidate.metadata
        if list(theirs.class_names) != list(ours.class_names):
            return f"its classes {theirs.class_names} differ from the served {ours.class_names}"
        if theirs.image_size != ours.image_size:
            return (
                f"its input size {theirs.image_size} px differs from the served model's "
                f"{ours.image_size} px (a retrained candidate keeps it)"
            )
        return ""

    def _record(self, job: ShadowJob, probabilities: np.ndarray, ms: float) -> None:
        names = list(self.served.metadata.class_names)
        records = []
        for position, (served, shadow) in enumerate(zip(job.served, probabilities, strict=True)):
            label, shadow_label = names[int(served.argmax())], names[int(shadow.argmax())]
            if label == shadow_label:
                SHADOW_AGREEMENTS.labels(candidate=self.tag).inc()
            else:
                SHADOW_DISAGREEMENTS.labels(
                    candidate=self.tag, served=label, shadow=shadow_label
                ).inc()
            records.append(
                PredictionRecord(
                    request_id=job.request_id,
                    position=position,
                    created_at=job.created_at,
                    image_sha256="",  # in the prediction's own record
                    image_format="",
                    width=0,
                    height=0,
                    label=label,
                    confidence=float(served.max()),
                    probabilities=dict(zip(names, map(float, served), strict=True)),
                    model=self.served.tag,
                    backend=self.backend_name,  # the candidate's run: backend, call time
                    latency_ms=round(ms, 3),
                    record="shadow",
                    shadow_model=self.tag,
                    shadow_label=shadow_label,
                    shadow_confidence=float(shadow.max()),
                )
            )
        try:
            # A fresh context per call, as the recorder does: bentoml.monitor keeps its record
            # in context variables.
            contextvars.Context().run(log_predictions, self.log_name, records)
        except Exception:  # the log must never stop the shadow thread
            logger.exception(
                "shadow: could not write %d records to %s", len(records), self.log_name
            )
