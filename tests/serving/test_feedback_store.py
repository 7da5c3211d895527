"""The feedback store against real databases: SQLite (WAL file) and a PostgreSQL server
started on loopback. Corrections, bad input (nothing stored), content-addressed photos,
retention."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.images import image_bytes
from support.postgres import postgres_server
from support.service import CLASS_NAMES

from kitchenware.serving.feedback.predictionlog import prediction_record
from kitchenware.serving.feedback.store import (
    FeedbackError,
    FeedbackStore,
    validate_label,
    validate_note,
)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeedbackStore]:
    if request.param == "sqlite":
        made = FeedbackStore(f"sqlite:///{tmp_path / 'fb' / 'feedback.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        made = FeedbackStore(url, tmp_path / "images")
        with made.engine.begin() as connection:  # a clean slate per test
            connection.exec_driver_sql("TRUNCATE predictions, feedback RESTART IDENTITY")
    yield made
    made.close()


def predict(store: FeedbackStore, request_id: str, data: bytes, label: str = "cup") -> None:
    scores = {name: (0.9 if name == label else 0.02) for name in CLASS_NAMES}
    record = prediction_record(request_id, 0, data, scores, "kitchenware:test", "tensorflow", 5.0)
    store.record_predictions([record], [data])


def stored_files(store: FeedbackStore) -> list[Path]:
    return sorted(p for p in store.images_dir.rglob("*") if p.is_file())


def test_a_correction_by_request_id_is_stored_with_its_photo(store: FeedbackStore) -> None:
    photo = image_bytes((200, 30, 30), "JPEG")
    predict(store, "req-1", photo, "cup")
    record = store.add_feedback("plate", request_id="req-1", note="it is a plate")
    assert (record.label, record.predicted_label, record.model) == (
        "plate",
        "cup",
        "kitchenware:test",
    )
    [saved] = store.feedback_records()
    assert saved == record
    path = store.image_path(saved.image_sha256, saved.image_ext)
    assert path.read_bytes() == photo and path.suffix == ".jpg"


def test_a_photo_sent_twice_is_stored_once(store: FeedbackStore) -> None:
    photo = image_bytes((30, 200, 30), "PNG")
    predict(store, "a", photo)
    predict(store, "b", photo)
    store.add_feedback("glass", request_id="a")
    store.add_feedback("glass", image=photo)  # sent directly too: same file
    assert len(stored_files(store)) == 1
    assert not [p for p in store.images_dir.rglob(".*")], "no temp files left behind"


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"request_id": "nobody-sent-this"}, 404, "unknown_request_id"),
        ({"image": b"%PDF-1.4 not an image"}, 400, "not_an_image"),
        ({}, 400, "missing_subject"),
    ],
)
def test_bad_corrections_are_4xx_and_store_nothing(
    store: FeedbackStore, kwargs: dict[str, object], status: int, reason: str
) -> None:
    before = store.counts()
    files = stored_files(store)
    with pytest.raises(FeedbackError) as caught:
        store.add_feedback("cup", **kwargs)  # type: ignore[arg-type]
    assert (caught.value.status_code, caught.value.reason) == (status, reason)
    assert caught.value.message.endswith(".") and len(caught.value.message) > 20
    assert store.counts() == before and stored_files(store) == files


def test_a_duplicate_is_409_naming_the_first(store: FeedbackStore) -> None:
    predict(store, "dup", image_bytes((10, 10, 200)))
    first = store.add_feedback("plate", request_id="dup")
    with pytest.raises(FeedbackError) as caught:
        store.add_feedback("spoon", request_id="dup")
    assert caught.value.status_code == 409 and caught.value.details["feedback_id"] == first.id
    assert f"feedback id {first.id}" in caught.value.message
    assert [r.label for r in store.feedback_records()] == ["plate"]


def test_an_expired_prediction_is_404_and_purge_drops_it_and_its_photo(
    store: FeedbackStore,
) -> None:
    old = time.time() - 2 * store.prediction_retention_s
    photo = image_bytes((90, 90, 10))
    scores = {name: 1 / len(CLASS_NAMES) for name in CLASS_NAMES}
    record = prediction_record("old", 0, photo, scores, "m", "tensorflow", 1.0, created_at=old)
    store.record_predictions([record], [photo])
    with pytest.raises(FeedbackError) as caught:
        store.add_feedback("cup", request_id="old")
    assert caught.value.reason == "expired_request_id"
    for path in stored_files(store):  # photos younger than a minute are spared (in flight)
        import os

        os.utime(path, (old, old))
    removed = store.purge()
    assert removed["predictions"] == 1 and removed["images"] == 1
    assert store.prediction("old") is None and stored_files(store) == []


def test_label_and_note_checks_name_the_classes_and_the_limit() -> None:
    with pytest.raises(FeedbackError) as caught:
        validate_label("bowl", CLASS_NAMES)
    assert caught.value.status_code == 400 and caught.value.details["classes"] == CLASS_NAMES
    assert "bowl" in caught.value.message and "cup, glass" in caught.value.message
    assert validate_note("  fine  ", 10) == "fine"
    with pytest.raises(FeedbackError) as caught:
        validate_note("x" * 11, 10)
    assert caught.value.reason == "note_too_long" and "KITCHENWARE_FEEDBACK_NOTE_MAX_CHARS" in str(
        caught.value
    )


def test_sqlite_syncs_corrections_fully_predictions_lightly_and_maps_no_shm(
    tmp_path: Path,
) -> None:
    """A rollback journal (no -shm file for a read-only folder to turn into SIGBUS);
    corrections committed with synchronous=FULL, predictions with NORMAL (no fsync)."""
    db = tmp_path / "feedback.db"
    store = FeedbackStore(f"sqlite:///{db}")
    predict(store, "p", image_bytes((1, 2, 3)))
    store.add_feedback("cup", request_id="p")
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "truncate"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    with store.prediction_engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    store.close()
    assert not list(tmp_path.glob("*-shm")) and not list(tmp_path.glob("*-wal"))
    assert sqlite3.connect(db).execute("select count(*) from feedback").fetchone() == (1,)


# A store in use, its folder made immutable (chattr -R +i, as an operator or a backup tool
# might); one connection from before, one opened after, each tries to write.
IMMUTABLE_FOLDER = """
import subprocess, sys
from kitchenware.serving.feedback.store import FeedbackStore, UnkeptPrediction
from kitchenware.serving.feedback.storefaults import fault_cause
folder = sys.argv[1]
before = FeedbackStore(f"sqlite:///{folder}/feedback.db")
def write(store, n):
    store.record_predictions([], [], [UnkeptPrediction(f"id{n}", 0, 0.0, "a real commit")])
write(before, 0)
subprocess.run(["chattr", "-R", "+i", folder], check=True)
try:
    for n in range(3):
        for store in (before, FeedbackStore(f"sqlite:///{folder}/feedback.db")):
            try:
                write(store, n + 1)
            except Exception as exc:
                print("refused:", fault_cause(exc))
finally:
    subprocess.run(["chattr", "-R", "-i", folder], check=True)
"""


def test_an_immutable_store_folder_is_an_error_not_a_sigbus(tmp_path: Path) -> None:
    """With WAL, SQLite maps the -shm file; on this ext4 the process then died of SIGBUS
    (exit -7) where a rollback journal gives an error the service answers 503."""
    import subprocess
    import sys

    folder = tmp_path / "store"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a file system that supports it")
    subprocess.run(["chattr", "-i", str(folder)], check=True)
    done = subprocess.run(
        [sys.executable, "-c", IMMUTABLE_FOLDER, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    refusals = [line for line in done.stdout.splitlines() if line.startswith("refused:")]
    assert len(refusals) == 6, done.stdout
    # the cause an operator reads in the 503 points at the folder, not at a failing disk
    assert all("folder" in line for line in refusals), refusals


def test_the_size_bound_removes_the_oldest_prediction_photos_never_a_correction(
    store: FeedbackStore,
) -> None:
    """Real files: past the bound the oldest predictions' photos go (their rows stay, and a
    correction by id hears why); a photo a correction uses stays however old."""
    photos = [image_bytes(None, size=(40, 40), seed=seed) for seed in range(12)]
    start = time.time() - 3600
    for n, photo in enumerate(photos):
        scores = {name: 1 / len(CLASS_NAMES) for name in CLASS_NAMES}
        record = prediction_record(f"p{n}", 0, photo, scores, "m", "openvino", 1.0, start + n)
        store.record_predictions([record], [photo])
    store.add_feedback("cup", request_id="p0")  # the oldest, corrected
    store.images_max_bytes = sum(map(len, photos[6:])) + len(photos[0])  # room for 7

    removed, size = store.bound_photos()

    on_disk = sum(path.stat().st_size for path in stored_files(store))
    kept = {path.stem for path in stored_files(store)}
    shas = [prediction_record("x", 0, p, scores, "m", "o", 1.0).image_sha256 for p in photos]
    assert on_disk <= store.images_max_bytes and removed >= 5 and size > 0
    assert shas[0] in kept and {shas[-1], shas[-2]} <= kept  # corrected, and the newest
    assert not kept & set(shas[1:5])  # the oldest uncorrected went first
    with pytest.raises(FeedbackError) as caught:
        store.add_feedback("cup", request_id="p1")
    assert caught.value.reason == "image_not_kept"
    assert "KITCHENWARE_FEEDBACK_IMAGES_MAX_MB" in caught.value.message
    assert store.add_feedback("cup", request_id="p2", image=photos[2]).image_sha256 == shas[2]
    assert (store.images_dir / shas[2][:2] / f"{shas[2]}.png").is_file()  # written again
