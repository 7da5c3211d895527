"""Keeping predictions off the answer path: a bounded queue and one writer thread per worker.

/classify answers as soon as the model has spoken; its prediction (the store's row, the photo
for a later correction by id, the bentoml.monitor record) is handed to this recorder, which
writes whatever has queued in one transaction at most every FLUSH_INTERVAL_S (group commit,
no fsync: see feedback.py). A slow or failing store never slows an answer: past
MAX_QUEUED predictions (or MAX_QUEUED_BYTES of photos) new ones are shed and counted in
`kitchenware_predictions_not_kept_total`, and every prediction that was not kept leaves a
note, so a later correction by its id is told "not kept because ...", not a false 404.

What a crash (SIGKILL, OOM) can lose: the predictions still queued, i.e. the last
FLUSH_INTERVAL_S or so. Corrections are never queued (loop.py commits them before answering).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kitchenware.serving.feedback.predictionlog import (
    PredictionLogBound,
    PredictionRecord,
    log_predictions,
)
from kitchenware.serving.feedback.store import FeedbackStore, UnkeptPrediction
from kitchenware.serving.feedback.storefaults import StoreHealth, StoreOpener, StoreUnavailable
from kitchenware.serving.metrics import PREDICTIONS_NOT_KEPT

logger = logging.getLogger("kitchenware.recorder")

# At most 4 commits a second per worker, whatever the traffic. A commit costs ~1.8 ms of CPU
# whatever its size (SQLite journal + SQLAlchemy + the monitor call + the thread's wake-up)
# against ~0.27 ms per prediction: at 0.1 s and ~20 predictions/s per worker a batch held 2
# and the recorder took 0.9 ms of CPU per image; at 0.25 s, 5 and ~0.6 (bench/RESULTS.md s.3).
FLUSH_INTERVAL_S = 0.25
MAX_BATCH = 256
MAX_QUEUED = 2048
MAX_QUEUED_BYTES = 64 * 1024 * 1024  # photos held in memory while the store lags
MAX_NOTES = 100_000  # unkept notes waiting for the store to come back (~100 bytes each)
RETRY_S = 1.0  # after a failed write, the next attempt


@dataclass(frozen=True)
class QueuedPrediction:
    request_id: str
    position: int
    data: bytes
    probabilities: np.ndarray
    latency_ms: float
    created_at: float


class PredictionRecorder:
    """Queue predictions now, keep them in the background, remember the ones not kept."""

    def __init__(
        self,
        store: StoreOpener[FeedbackStore],
        describe: Callable[[QueuedPrediction], PredictionRecord],
        log_name: str,
        health: StoreHealth,
        log_bound: PredictionLogBound | None = None,
    ) -> None:
        self.store = store
        self.describe = describe
        self.log_name = log_name
        self.log_bound = log_bound  # its files' size and age, kept here, off the answer path
        self.health = health
        self.queue_health = StoreHealth(
            "the prediction queue",
            "predictions are answered but not kept until the store catches up",
            gauge=False,
        )
        self.log_health = StoreHealth(
            f"the prediction log {log_name!r}", "its records are dropped", gauge=False
        )
        self._queue: deque[QueuedPrediction] = deque()
        self._queued_bytes = 0
        self._pending: dict[str, int] = {}  # request id -> predictions queued or in writing
        self._notes: dict[tuple[str, int], UnkeptPrediction] = {}  # not yet in the store
        self._submitted = self._done = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- the answer path (never blocks on the store) --------------------------------------

    def submit(
        self, request_id: str, photos: Sequence[bytes], probabilities: np.ndarray, ms: float
    ) -> None:
        now = time.time()
        with self._changed:
            for position, (data, row) in enumerate(zip(photos, probabilities, strict=True)):
                item = QueuedPrediction(request_id, position, data, row, ms, now)
                full = len(self._queue) >= MAX_QUEUED
                if full or self._queued_bytes + len(data) > MAX_QUEUED_BYTES:
                    self._not_kept([item], "queue_full", self._queue_full_reason())
                    continue
                self._queue.append(item)
                self._queued_bytes += len(data)
                self._pending[request_id] = self._pending.get(request_id, 0) + 1
                self._submitted += 1
            self._changed.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="kitchenware-recorder", daemon=True
                )
                self._thread.start()

    def _queue_full_reason(self) -> str:
        cause = f"the store is slower than the traffic; {MAX_QUEUED} predictions were queued"
        self.queue_health.failed(cause, "queue")
        return cause

    # -- what /feedback asks ------------------------------------------------------------

    def queued(self) -> int:
        with self._changed:
            return len(self._queue)

    def pending(self, request_id: str) -> bool:
        with self._changed:
            return request_id in self._pending

    def unkept_reason(self, request_id: str, position: int) -> str | None:
        with self._changed:
            note = self._notes.get((request_id, position))
        return note.reason if note is not None else None

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is written (or shed); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self._submitted
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    # -- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            started = time.monotonic()
            with self._changed:
                while not self._queue and not self._notes and not self._stopping:
                    self._changed.wait()
                if self._stopping and not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
                self._queued_bytes -= sum(len(item.data) for item in batch)
                notes = list(self._notes.values())
            written = self._write(batch, notes)
            with self._changed:
                if written:
                    for note in notes:
                        self._notes.pop((note.request_id, note.position), None)
                for item in batch:
                    left = self._pending.get(item.request_id, 1) - 1
                    if left > 0:
                        self._pending[item.request_id] = left
                    else:
                        self._pending.pop(item.request_id, None)
                self._done += len(batch)
                self._changed.notify_all()
                if len(self._queue) < MAX_QUEUED // 2:
                    self.queue_health.worked()
            pause = FLUSH_INTERVAL_S if written else RETRY_S
            time.sleep(max(0.0, pause - (time.monotonic() - started)))

    def _write(self, batch: list[QueuedPrediction], notes: list[UnkeptPrediction]) -> bool:
        """Monitor records, then photos and rows in one transaction; False if the store failed."""
        try:
            records = [self.describe(item) for item in batch]
        except Exception:  # a bug, not a fault: keep serving, say it once per batch
            logger.exception("could not describe %d predictions; not kept", len(batch))
            self._not_kept(batch, "store_failing", "they could not be described (a bug)")
            return True
        self._log(records)
        try:
            store = self.store.get()
        except StoreUnavailable:
            self._not_kept(
                batch, "store_failing", f"the store could not be opened: {self.store.error}"
            )
            return False
        try:
            photo_errors = store.record_predictions(records, [item.data for item in batch], notes)
        except Exception as exc:  # the store failed: these are not kept, the notes stay
            cause = self.health.failed(exc, "keep_predictions")
            store.reopen()
            self._not_kept(batch, "store_failing", f"the store failed: {cause}")
            return False
        if photo_errors:
            self.health.failed(photo_errors[0], "keep_photo")
            PREDICTIONS_NOT_KEPT.labels(reason="photo_failed").inc(len(photo_errors))
        else:
            self.health.worked()
        return True

    def _log(self, records: list[PredictionRecord]) -> None:
        try:
            # A fresh context per batch: bentoml.monitor keeps its record in context
            # variables, and one failed record must not poison the thread's next ones.
            contextvars.Context().run(log_predictions, self.log_name, records)
            if self.log_bound is not None and records:
                self.log_bound.after_write()
        except Exception as exc:  # the log must never fail a prediction
            self.log_health.failed(exc, "prediction_log")
        else:
            self.log_health.worked()

    def _not_kept(self, items: list[QueuedPrediction], metric: str, reason: str) -> None:
        PREDICTIONS_NOT_KEPT.labels(reason=metric).inc(len(items))
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        with self._changed:
            for item in items:
                key = (item.request_id, item.position)
                self._notes[key] = UnkeptPrediction(
                    item.request_id, item.position, item.created_at, f"{reason}, at {stamp} UTC"
                )
            while len(self._notes) > MAX_NOTES:  # the oldest go first
                self._notes.pop(next(iter(self._notes)))
