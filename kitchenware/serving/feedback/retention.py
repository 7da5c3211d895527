"""How long and how much the feedback store keeps: retention by age, and the photo folder's
size bound. A mixin of FeedbackStore (store.py), run by the recorder's writer thread and at
start-up, never on the answer path.

Predictions (and the photos only they use) are kept for `prediction_retention_s`;
corrections for `feedback_retention_s` (0: forever). Past `images_max_bytes`, the photos of
the oldest predictions are removed (their rows stay, marked not kept, with a note saying
why) until the folder is back under LOW_WATER of it. A photo a correction uses is never
removed: the removal and a correction's insert take the same lock (`lock_photos`: SQLite's
write lock, a PostgreSQL advisory lock) and each looks at the other's rows inside it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa

from kitchenware.serving.feedback.schema import (
    feedback,
    insert_new,
    lock_photos,
    predictions,
    unkept_predictions,
)
from kitchenware.serving.metrics import count_removed

logger = logging.getLogger("kitchenware.feedback")

PURGE_INTERVAL_S = 3600.0
# The size bound is checked after a worker wrote this share of it in new photos, or a minute
# after its last check while photos arrive (other workers' photos count too); it removes
# down to LOW_WATER of the bound, so removals come in batches, not one per photo.
SIZE_CHECK_SHARE = 0.02
SIZE_CHECK_INTERVAL_S = 60.0
LOW_WATER = 0.9
IN_FLIGHT_S = 60.0  # a photo this young may be waiting for its row: never an orphan yet


class PhotoRetention:
    """Retention and the size bound, over the store's engine and photo folder."""

    engine: sa.Engine
    images_dir: Path
    prediction_retention_s: float
    feedback_retention_s: float
    images_max_bytes: int

    def __init__(self) -> None:
        self._written_since_check = 0  # bytes of new photos since the last size check
        self._last_size_check = time.monotonic()
        self._last_bound_log = -PURGE_INTERVAL_S
        self._last_purge = -PURGE_INTERVAL_S

    def maybe_purge(self) -> None:
        if time.monotonic() - self._last_purge >= PURGE_INTERVAL_S:
            self._last_purge = time.monotonic()
            try:
                self.purge()
            except Exception:  # retention is housekeeping; never fail a request on it
                logger.exception("feedback store: purge failed")

    def purge(self, now: float | None = None) -> dict[str, int]:
        """Drop expired predictions and corrections, then photos nothing refers to."""
        now = time.time() if now is None else now
        removed = {"predictions": 0, "feedback": 0, "images": 0}
        photos = self._photo_files()
        with self.engine.begin() as connection:
            lock_photos(connection)
            removed["predictions"] = connection.execute(
                predictions.delete().where(
                    predictions.c.created_at < now - self.prediction_retention_s
                )
            ).rowcount
            connection.execute(
                unkept_predictions.delete().where(
                    unkept_predictions.c.created_at < now - self.prediction_retention_s
                )
            )
            if self.feedback_retention_s > 0:
                removed["feedback"] = connection.execute(
                    feedback.delete().where(feedback.c.created_at < now - self.feedback_retention_s)
                ).rowcount
            used = self._photos_in_use(connection)
            unused = [
                photo
                for sha, files in photos.items()
                if sha not in used
                for photo in files
                if now - photo.mtime > IN_FLIGHT_S  # not one waiting for its row
            ]
            removed["images"], size = unlink_photos(unused)
        count_removed("prediction", "age", removed["predictions"])
        count_removed("correction", "age", removed["feedback"])
        count_removed("photo", "age", removed["images"], size)
        if any(removed.values()):
            logger.info("feedback store: purged %s", removed)
        return removed

    # -- the size bound of the photo folder -----------------------------------------------

    def maybe_bound_photos(self) -> None:
        """After a batch of predictions: check the folder's size when enough was written."""
        if not self.images_max_bytes or not self._written_since_check:
            return
        share = self._written_since_check >= self.images_max_bytes * SIZE_CHECK_SHARE
        if share or time.monotonic() - self._last_size_check >= SIZE_CHECK_INTERVAL_S:
            self._written_since_check, self._last_size_check = 0, time.monotonic()
            try:
                self.bound_photos()
            except Exception:  # housekeeping: the next check tries again
                logger.exception("feedback store: the photo folder's size bound failed")

    def bound_photos(self, now: float | None = None) -> tuple[int, int]:
        """If the photo folder holds more than `images_max_bytes`, remove the photos of the
        oldest predictions (by their latest use; photos no row refers to first) until it is
        under LOW_WATER of it. Never a photo a correction uses. Returns (photos, bytes)."""
        now = time.time() if now is None else now
        photos = self._photo_files()
        total = sum(photo.size for files in photos.values() for photo in files)
        if total <= self.images_max_bytes:
            return 0, 0
        with self.engine.connect() as connection:
            last_use = connection.execute(
                sa.select(predictions.c.image_sha256, sa.func.max(predictions.c.created_at))
                .where(predictions.c.image_kept)
                .group_by(predictions.c.image_sha256)
            ).all()
            used = self._photos_in_use(connection)
            corrected: set[str] = set(
                connection.execute(sa.select(feedback.c.image_sha256)).scalars()
            )
        oldest_first = sorted(
            [(when, sha) for sha, when in last_use]
            + [  # photos of predictions whose rows were never written (a store fault)
                (min(photo.mtime for photo in files), sha)
                for sha, files in photos.items()
                if sha not in used and now - max(photo.mtime for photo in files) > IN_FLIGHT_S
            ]
        )
        excess, chosen = total - LOW_WATER * self.images_max_bytes, []
        for _, sha in oldest_first:
            if excess <= 0:
                break
            if sha in photos and sha not in corrected:
                chosen.append(sha)
                excess -= sum(photo.size for photo in photos[sha])
        mb = self.images_max_bytes / 1024 / 1024
        reason = (
            f"it was removed at {time.strftime('%H:%M', time.gmtime(now))} UTC to keep the "
            f"photo folder under KITCHENWARE_FEEDBACK_IMAGES_MAX_MB={mb:g}"
        )
        count = size = 0
        for start in range(0, len(chosen), 500):  # SQLite's bound parameters
            batch = chosen[start : start + 500]
            with self.engine.begin() as connection:
                lock_photos(connection)
                # The rows stay (label, probabilities): a correction by id is told why the
                # photo is gone, and a correction that sends the photo still joins them.
                connection.execute(
                    insert_new(self.engine, unkept_predictions).from_select(
                        ["request_id", "position", "created_at", "reason"],
                        sa.select(
                            predictions.c.request_id,
                            predictions.c.position,
                            predictions.c.created_at,
                            sa.literal(reason, sa.String),
                        ).where(predictions.c.image_sha256.in_(batch), predictions.c.image_kept),
                    )
                )
                connection.execute(
                    predictions.update()
                    .where(predictions.c.image_sha256.in_(batch))
                    .values(image_kept=False)
                )
                corrected_now: set[str] = set(  # under the lock: corrections committed so far
                    connection.execute(
                        sa.select(feedback.c.image_sha256).where(feedback.c.image_sha256.in_(batch))
                    ).scalars()
                )
                removed = unlink_photos(
                    [photo for sha in batch if sha not in corrected_now for photo in photos[sha]]
                )
            count, size = count + removed[0], size + removed[1]
        count_removed("photo", "size", count, size)
        if time.monotonic() - self._last_bound_log < PURGE_INTERVAL_S:
            return count, size  # one line an hour; the metric counts every removal
        self._last_bound_log = time.monotonic()
        logger.info(
            "feedback store: the photo folder held %.1f MB, over its bound of %g MB "
            "(KITCHENWARE_FEEDBACK_IMAGES_MAX_MB): removed the photos of the %d oldest "
            "predictions (%.1f MB)",
            total / 1024 / 1024,
            mb,
            count,
            size / 1024 / 1024,
        )
        return count, size

    def _photo_files(self) -> dict[str, list[PhotoFile]]:
        """Every stored photo by sha256 (temp files, which start with a dot, left out)."""
        found: dict[str, list[PhotoFile]] = {}
        for path in self.images_dir.glob("*/*.*"):
            if path.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                facts = path.stat()
                found.setdefault(path.stem, []).append(
                    PhotoFile(path, facts.st_size, facts.st_mtime)
                )
        return found

    @staticmethod
    def _photos_in_use(connection: sa.Connection) -> set[str]:
        used: set[str] = set(connection.execute(sa.select(predictions.c.image_sha256)).scalars())
        return used | set(connection.execute(sa.select(feedback.c.image_sha256)).scalars())


class PhotoFile(NamedTuple):
    path: Path
    size: int
    mtime: float


def unlink_photos(photos: list[PhotoFile]) -> tuple[int, int]:
    """Remove these files; (how many, bytes) of those this call removed."""
    count = size = 0
    for photo in photos:
        with contextlib.suppress(FileNotFoundError):  # another worker was quicker
            photo.path.unlink()
            count, size = count + 1, size + photo.size
    return count, size
