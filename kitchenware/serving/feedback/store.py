"""The feedback store: recent predictions, the corrections users send, and their photos.

One code path (SQLAlchemy Core) for both databases:
- SQLite (the default, a file under the BentoML home) with a rollback journal: a correction
  is committed with synchronous=FULL, so it is on disk before it is acknowledged;
  predictions go through a second engine with synchronous=NORMAL (no fsync per batch).
  Not WAL: WAL maps a `-shm` file into every process that opens the database, and a store
  folder turned read-only or immutable under it killed the model workers with SIGBUS
  (issue 18); a rollback journal maps nothing, and the fault is an error like any other.
- PostgreSQL by URL (`postgresql://user@host/db`, driven by psycopg 3) when several
  replicas share one store: connect and statement timeouts, predictions committed with
  synchronous_commit off, corrections with the server's default (on).

Photos are stored by content (`images/<sha[:2]>/<sha>.<ext>`), written to a temp file and
renamed into place, so a photo sent twice is stored once and a crash never leaves half a
file; a correction's photo is fsynced first, a prediction's is not (a crash may lose the last
moments of predictions, never an acknowledged correction). A prediction's photo is written
before its row, so a row never points at a missing photo. Predictions (and the photos only
they use) are kept for `prediction_retention_hours`; corrections for
`feedback_retention_days` (0: forever). Predictions that could not be kept leave a short
note (`unkept_predictions`) so a later correction hears "not kept because ...", not 404.

The photo folder also has a size bound (`images_max_bytes`). Retention and the bound live in
retention.py (a mixin of the store); the tables and the writers' locks in schema.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from kitchenware.runtime.files import atomic_writer
from kitchenware.runtime.preprocessing import ImageDecodeError, open_image
from kitchenware.serving.feedback.predictionlog import PredictionRecord, image_facts
from kitchenware.serving.feedback.retention import PhotoRetention
from kitchenware.serving.feedback.schema import (
    create_schema,
    feedback,
    insert_new,
    lock_photos,
    predictions,
    unkept_predictions,
)
from kitchenware.serving.feedback.storefaults import (
    CONNECT_TIMEOUT_S,
    LOCK_WAIT_S,
    STATEMENT_TIMEOUT_S,
)
from kitchenware.serving.http.errors import ClientError

logger = logging.getLogger("kitchenware.feedback")

FORMAT_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
FORMAT_EXTENSIONS |= {"TIFF": "tif", "GIF": "gif"}
DEFAULT_DIRNAME = "kitchenware-feedback"


class FeedbackError(ClientError):
    """A correction the store refuses; the status and sentence go to the client."""


class UnkeptPrediction(NamedTuple):
    """A prediction that was answered but could not be kept, and why (one sentence)."""

    request_id: str
    position: int
    created_at: float
    reason: str


@dataclass(frozen=True)
class FeedbackRecord:
    id: int
    created_at: float
    request_id: str | None
    position: int | None
    image_sha256: str
    image_ext: str
    label: str
    predicted_label: str | None
    note: str | None
    model: str | None


def default_url() -> str:
    home = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml").expanduser()
    return f"sqlite:///{home / DEFAULT_DIRNAME / 'feedback.db'}"


def engine_url(url: str) -> sa.URL:
    """`postgresql://` and `postgres://` use psycopg 3; SQLite paths get their folder made."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"Feedback store URL {url!r}: use sqlite:///PATH or postgresql://...")
    return parsed


def redacted(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).expanduser()


class SqlitePragmas:
    """Set on every new SQLite connection: a rollback journal (no -shm mapping), no mmap,
    how hard a commit syncs, and a bounded wait for another writer's lock."""

    def __init__(self, synchronous: str) -> None:
        self.synchronous = synchronous

    def __call__(self, dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode=TRUNCATE")
        cursor.execute("PRAGMA mmap_size=0")
        cursor.execute(f"PRAGMA synchronous={self.synchronous}")
        cursor.close()


def make_engine(url: sa.URL, synchronous: str = "FULL") -> sa.Engine:
    """An engine whose every call is bounded in time (see storefaults.py)."""
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": LOCK_WAIT_S})
        sa.event.listen(engine, "connect", SqlitePragmas(synchronous))
        return engine
    statement_ms = int(STATEMENT_TIMEOUT_S * 1000)
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=LOCK_WAIT_S,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}",
        },
    )


def sync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> bool:
    """Write `data` to `path` via temp file + rename (+ fsync when `durable`); False if it
    already exists. Without fsync a process crash still leaves the whole file or none."""
    if path.exists():
        if durable:  # it may have been kept for a prediction, without fsync
            sync_file(path)
        return False
    with atomic_writer(path, "wb", durable=durable) as handle:
        handle.write(data)
    return True


def not_kept_error(where: str, reason: str) -> FeedbackError:
    """409: the prediction was answered but never kept, so it cannot be corrected by id."""
    return FeedbackError(
        409,
        "prediction_not_kept",
        f"The prediction with {where} was answered but not kept ({reason}); send the image "
        "with the correction instead.",
    )


def validate_label(label: str | None, class_names: list[str]) -> str:
    label = (label or "").strip()
    if label not in class_names:
        got = f"'{label}'" if label else "no label"
        raise FeedbackError(
            400,
            "unknown_label",
            f"Got {got}; the label must be one of the model's classes: {', '.join(class_names)}.",
            classes=class_names,
        )
    return label


def validate_note(note: str | None, max_chars: int) -> str | None:
    note = (note or "").strip() or None
    if note is not None and len(note) > max_chars:
        raise FeedbackError(
            400,
            "note_too_long",
            f"The note has {len(note):,} characters, over the limit of {max_chars:,} "
            "(KITCHENWARE_FEEDBACK_NOTE_MAX_CHARS).",
            limit=max_chars,
        )
    return note


class FeedbackStore(PhotoRetention):
    """Predictions, corrections and photos in one database plus one image folder."""

    def __init__(
        self,
        url: str = "",
        images_dir: Path | str | None = None,
        *,
        keep_prediction_images: bool = True,
        prediction_retention_s: float = 24 * 3600.0,
        feedback_retention_s: float = 0.0,
        images_max_bytes: int = 0,
    ) -> None:
        self.url = url or default_url()
        parsed = engine_url(self.url)
        db_file = sqlite_path(parsed)
        if db_file is not None:
            db_file.parent.mkdir(parents=True, exist_ok=True)
        if images_dir:
            self.images_dir = Path(images_dir).expanduser()
        elif db_file is not None:
            self.images_dir = db_file.parent / "images"
        else:
            raise ValueError(
                "A PostgreSQL feedback store needs KITCHENWARE_FEEDBACK_IMAGES_DIR (a folder "
                "every replica shares) for the photos."
            )
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.keep_prediction_images = keep_prediction_images
        self.prediction_retention_s = prediction_retention_s
        self.feedback_retention_s = feedback_retention_s
        self.images_max_bytes = images_max_bytes
        PhotoRetention.__init__(self)
        self.engine = make_engine(parsed, "FULL")  # corrections: durable before the answer
        self.prediction_engine = (  # predictions: group commits without fsync
            make_engine(parsed, "NORMAL") if db_file is not None else self.engine
        )
        create_schema(self.engine)
        self.maybe_purge()  # at start-up, then at most hourly on writes

    @classmethod
    def from_settings(cls, settings: Any) -> FeedbackStore:
        return cls(
            settings.feedback_url,
            settings.feedback_images_dir or None,
            keep_prediction_images=settings.keep_prediction_images,
            prediction_retention_s=settings.prediction_retention_hours * 3600.0,
            feedback_retention_s=settings.feedback_retention_days * 86400.0,
            images_max_bytes=int(settings.feedback_images_max_mb * 1024 * 1024),
        )

    def describe(self) -> str:
        return f"{redacted(self.url)} (photos in {self.images_dir})"

    def close(self) -> None:
        self.engine.dispose()
        self.prediction_engine.dispose()

    reopen = close  # after a fault: drop every pooled connection; the next call makes new ones

    # -- photos -------------------------------------------------------------------------

    def image_path(self, sha256: str, ext: str) -> Path:
        return self.images_dir / sha256[:2] / f"{sha256}.{ext}"

    def store_image(
        self, data: bytes, name: str = "image", max_pixels: int | None = None
    ) -> tuple[str, str]:
        """Check the bytes are an image, store them once; returns (sha256, extension)."""
        try:
            image = open_image(data, name=name, max_pixels=max_pixels)
        except ImageDecodeError as exc:
            raise FeedbackError(exc.status_code, exc.reason, str(exc)) from exc
        sha256, _, _, _ = image_facts(data)
        ext = FORMAT_EXTENSIONS.get(str(image.format), "img")
        atomic_write(self.image_path(sha256, ext), data)
        return sha256, ext

    # -- predictions --------------------------------------------------------------------

    def record_predictions(
        self,
        records: list[PredictionRecord],
        images: list[bytes],
        unkept: list[UnkeptPrediction] = (),  # type: ignore[assignment]
    ) -> list[OSError]:
        """Keep these predictions (and, by setting, their photos) for later feedback, in one
        transaction without fsync; `unkept` notes predictions that could not be kept.
        Returns the errors of photos that could not be written (their rows say so).

        Photos first, rows after: a crash between the two leaves an orphan photo (purged
        later), never a row whose photo is missing."""
        rows, photo_errors = [], []
        for record, data in zip(records, images, strict=True):
            ext = FORMAT_EXTENSIONS.get(record.image_format, "img")
            kept = self.keep_prediction_images and bool(record.image_format)
            if kept:
                try:
                    path = self.image_path(record.image_sha256, ext)
                    if atomic_write(path, data, durable=False):
                        self._written_since_check += len(data)
                except OSError as exc:  # e.g. the photo folder full, the database elsewhere
                    kept = False
                    photo_errors.append(exc)
            rows.append(
                {
                    "request_id": record.request_id,
                    "position": record.position,
                    "created_at": record.created_at,
                    "image_sha256": record.image_sha256,
                    "image_ext": ext,
                    "image_kept": kept,
                    "width": record.width,
                    "height": record.height,
                    "label": record.label,
                    "probabilities": json.dumps(record.probabilities),
                    "model": record.model,
                    "backend": record.backend,
                    "latency_ms": record.latency_ms,
                }
            )
        notes = [note._asdict() for note in unkept]
        if not rows and not notes:
            return photo_errors
        with self.prediction_engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            # A client may send the same X-Request-ID twice: keep the first, lose no batch.
            for table, values in ((predictions, rows), (unkept_predictions, notes)):
                if values:
                    connection.execute(insert_new(self.engine, table), values)
        self.maybe_purge()
        self.maybe_bound_photos()
        return photo_errors

    def check_writable(self) -> None:
        """Raise what a write would meet now (full disk, read-only folder, lock, server down):
        a rolled-back insert, so a correction for an unknown id can tell "the store is failing
        (the prediction may be one it lost)" from "unknown"."""
        with self.engine.connect() as connection, connection.begin() as transaction:
            connection.execute(
                unkept_predictions.insert().values(
                    request_id="", position=-1, created_at=0.0, reason="write probe"
                )
            )
            transaction.rollback()

    def raise_if_unkept(self, request_id: str, position: int, where: str) -> None:
        reason = self.unkept_reason(request_id, position)
        if reason is not None:
            raise not_kept_error(where, reason)

    def prediction(self, request_id: str, position: int = 0) -> sa.Row[Any] | None:
        with self.engine.connect() as connection:
            return connection.execute(
                sa.select(predictions).where(
                    predictions.c.request_id == request_id, predictions.c.position == position
                )
            ).first()

    # -- corrections --------------------------------------------------------------------

    def add_feedback(
        self,
        label: str,
        *,
        request_id: str | None = None,
        position: int = 0,
        image: bytes | None = None,
        note: str | None = None,
        max_pixels: int | None = None,
        now: float | None = None,
    ) -> FeedbackRecord:
        """Store one correction; returns it once committed. Raises FeedbackError (4xx).

        The caller validates label and note first (validate_label, validate_note)."""
        now = time.time() if now is None else now
        predicted = model = None
        row: sa.Row[Any] | None = None
        if request_id is not None:
            row = self.prediction(request_id, position)
            where = f"request_id '{request_id}'" + (f" (position {position})" if position else "")
            if row is None:
                self.raise_if_unkept(request_id, position, where)
                raise FeedbackError(
                    404,
                    "unknown_request_id",
                    f"No prediction with {where}: it is unknown or older than the "
                    "retention (KITCHENWARE_PREDICTION_RETENTION_HOURS); send the image "
                    "with the correction instead.",
                )
            if now - row.created_at > self.prediction_retention_s:
                raise FeedbackError(
                    404,
                    "expired_request_id",
                    f"The prediction with {where} is older than the retention of "
                    f"{self.prediction_retention_s / 3600:g} h "
                    "(KITCHENWARE_PREDICTION_RETENTION_HOURS); send the image instead.",
                )
            predicted, model = row.label, row.model
            if image is None and not row.image_kept:
                why = self.unkept_reason(request_id, position) or (
                    "KITCHENWARE_KEEP_PREDICTION_IMAGES=false, or the photo folder could not "
                    "be written"
                )
                raise FeedbackError(
                    400,
                    "image_not_kept",
                    f"The photo of {where} was not kept ({why}): send the image with the "
                    "correction.",
                )
        elif image is None:
            raise FeedbackError(
                400,
                "missing_subject",
                "Say what is being corrected: send request_id (from a /classify answer) "
                "or the image itself.",
            )
        if image is not None:
            sha256, ext = self.store_image(image, max_pixels=max_pixels)
        else:
            assert row is not None
            sha256, ext = row.image_sha256, row.image_ext
        key = (
            f"prediction:{request_id}:{position}"
            if request_id is not None
            else f"image:{sha256}:{label}"
        )
        values: dict[str, Any] = {
            "created_at": now,
            "dedup_key": key,
            "request_id": request_id,
            "position": position if request_id is not None else None,
            "image_sha256": sha256,
            "image_ext": ext,
            "label": label,
            "predicted_label": predicted,
            "note": note,
            "model": model,
        }
        try:
            with self.engine.begin() as connection:
                lock_photos(connection)
                new_id: int = connection.execute(
                    feedback.insert().values(**values).returning(feedback.c.id)
                ).scalar_one()
                # Under the lock: a removal that ran before this insert may have taken the
                # photo; after it, no removal can (it sees this row). Durable before the ack.
                self._photo_for_correction(sha256, ext, image, request_id)
        except IntegrityError as exc:
            existing = self._feedback_by_key(key)
            what = (
                f"request_id '{request_id}'" if request_id is not None else "this image and label"
            )
            stored = f"feedback id {existing.id}, label '{existing.label}'" if existing else "?"
            raise FeedbackError(
                409,
                "duplicate_feedback",
                f"A correction for {what} is already stored ({stored}).",
                feedback_id=existing.id if existing else None,
            ) from exc
        return FeedbackRecord(
            id=int(new_id), **{k: v for k, v in values.items() if k != "dedup_key"}
        )

    def _photo_for_correction(
        self, sha256: str, ext: str, image: bytes | None, request_id: str | None
    ) -> None:
        path = self.image_path(sha256, ext)
        if path.is_file():
            sync_file(path)  # a prediction's photo was kept without fsync
        elif image is not None:
            atomic_write(path, image)
        else:
            raise FeedbackError(
                404,
                "image_gone",
                f"The photo of request_id '{request_id}' is gone (removed by the retention "
                "or size bound as the correction arrived); send the image with the correction.",
            )

    def unkept_reason(self, request_id: str, position: int) -> str | None:
        with self.engine.connect() as connection:
            reason: str | None = connection.execute(
                sa.select(unkept_predictions.c.reason).where(
                    unkept_predictions.c.request_id == request_id,
                    unkept_predictions.c.position == position,
                )
            ).scalar()
        return reason

    def _feedback_by_key(self, key: str) -> FeedbackRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(feedback).where(feedback.c.dedup_key == key)).first()
        return _record(row) if row is not None else None

    def feedback_records(self) -> list[FeedbackRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(feedback).order_by(feedback.c.id)).all()
        return [_record(row) for row in rows]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            return {
                table.name: int(
                    connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                )
                for table in (predictions, feedback)
            }


def _record(row: sa.Row[Any]) -> FeedbackRecord:
    data = row._asdict()
    data.pop("dedup_key", None)
    return FeedbackRecord(**data)


@contextlib.contextmanager
def open_store(url: str, images_dir: Path | str | None = None) -> Iterator[FeedbackStore]:
    store = FeedbackStore(url, images_dir)
    try:
        yield store
    finally:
        store.close()
