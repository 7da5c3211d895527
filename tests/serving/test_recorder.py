"""Predictions kept in the background (kitchenware/serving/feedback/recorder.py) on a real SQLite
store: few transactions for many predictions, a locked store never blocks the caller, what
could not be kept is named to a later correction (409, not 404), a full queue sheds."""

from __future__ import annotations

import contextvars
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from support.images import image_bytes
from support.service import CLASS_NAMES

from kitchenware.serving.feedback import recorder as recorder_module
from kitchenware.serving.feedback.predictionlog import (
    PredictionRecord,
    log_predictions,
    prediction_record,
)
from kitchenware.serving.feedback.recorder import PredictionRecorder, QueuedPrediction
from kitchenware.serving.feedback.store import FeedbackError, FeedbackStore
from kitchenware.serving.feedback.storefaults import StoreHealth, StoreOpener

SCORES = np.array([[0.9, 0.02, 0.02, 0.02, 0.02, 0.02]])


def describe(item: QueuedPrediction) -> PredictionRecord:
    scores = dict(zip(CLASS_NAMES, map(float, item.probabilities), strict=True))
    return prediction_record(
        item.request_id, item.position, item.data, scores, "m", "tf", 1.0, item.created_at
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    made = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    yield made
    made.close()


def recorder_for(store: FeedbackStore) -> PredictionRecorder:
    health = StoreHealth("the test store", "")
    return PredictionRecorder(StoreOpener(lambda: store, "test", health), describe, "", health)


def test_many_predictions_few_transactions(store: FeedbackStore) -> None:
    commits: list[int] = []
    sa.event.listen(store.prediction_engine, "commit", lambda _c: commits.append(1))
    recorder = recorder_for(store)
    photo = image_bytes((200, 10, 10))
    started = time.perf_counter()
    for n in range(300):
        recorder.submit(f"r{n}", [photo], SCORES, 1.0)
    submitted_s = time.perf_counter() - started
    assert recorder.flush(30)
    assert store.counts()["predictions"] == 300
    assert len(commits) <= 10, len(commits)  # group commit, not one per prediction
    assert submitted_s < 1.0  # the caller only queued
    assert store.add_feedback("glass", request_id="r7").predicted_label == "cup"


def test_a_locked_store_blocks_no_caller_and_a_lost_prediction_is_named(
    store: FeedbackStore, tmp_path: Path
) -> None:
    recorder = recorder_for(store)
    locker = sqlite3.connect(tmp_path / "feedback.db", timeout=0, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    started = time.perf_counter()
    recorder.submit("during", [image_bytes((10, 200, 10))], SCORES, 1.0)
    assert time.perf_counter() - started < 0.5
    assert recorder.flush(15)  # the write gave up after the bounded lock wait
    reason = recorder.unkept_reason("during", 0)
    assert reason is not None and "locked" in reason
    locker.execute("ROLLBACK")
    locker.close()
    deadline = time.monotonic() + 15
    while recorder.unkept_reason("during", 0) is not None and time.monotonic() < deadline:
        time.sleep(0.2)  # the note is written once the store works again
    with pytest.raises(FeedbackError) as caught:
        store.add_feedback("cup", request_id="during")
    assert (caught.value.status_code, caught.value.reason) == (409, "prediction_not_kept")
    assert "locked by another process" in caught.value.message


def test_a_full_queue_sheds_instead_of_growing(
    store: FeedbackStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "MAX_QUEUED", 20)
    recorder = recorder_for(store)
    locker = sqlite3.connect(tmp_path / "feedback.db", timeout=0, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # the writer stalls on the lock
    try:
        photo = image_bytes((10, 10, 200))
        for n in range(60):
            recorder.submit(f"q{n}", [photo], SCORES, 1.0)
        shed = [n for n in range(60) if recorder.unkept_reason(f"q{n}", 0)]
        # The queue holds 20; beyond it and the one batch in writing, every one is shed.
        assert recorder.queued() <= 20 and len(shed) >= 20, (recorder.queued(), shed)
        assert "slower than the traffic" in str(recorder.unkept_reason(f"q{shed[-1]}", 0))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert recorder.flush(15)


def test_the_first_batch_of_the_prediction_log_logs_no_duplicate_column_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """BentoML learns a monitor's columns from its first record and warned "Column name ...
    is duplicated" for every other row of that first batch (14 lines per row per worker)."""
    monkeypatch.chdir(tmp_path)  # bentoml.monitor's default files: ./monitoring/<name>/
    photo = image_bytes((10, 10, 200))
    scores = dict(zip(CLASS_NAMES, map(float, SCORES[0]), strict=True))
    records = [prediction_record(f"q{n}", 0, photo, scores, "m", "ov", 1.0) for n in range(4)]
    name = f"first_batch_{tmp_path.name}"  # a monitor this process has not used yet
    with caplog.at_level(logging.WARNING):
        contextvars.Context().run(log_predictions, name, records)
        contextvars.Context().run(log_predictions, name, records[:2])
    assert [r.getMessage() for r in caplog.records if "duplicated" in r.getMessage()] == []
    lines = (tmp_path / "monitoring" / name / "data" / "data.0.log").read_text().splitlines()
    logged = [json.loads(line)["kitchenware_request_id"] for line in lines]
    assert logged == ["q0", "q1", "q2", "q3", "q0", "q1"]  # every row, in order
