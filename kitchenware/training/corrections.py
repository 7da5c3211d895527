"""What a retrain learns from, read from the service's feedback store: corrections and
the photos the service kept from recent predictions; and the seeded, stratified split of
the corrected photos into train and holdout.

The store is read only through its public API (`FeedbackStore.feedback_records`,
`image_path`, its engine and `predictions` table), never written.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from kitchenware.serving.feedback.schema import predictions
from kitchenware.serving.feedback.store import FeedbackStore, engine_url, sqlite_path


class RetrainInputError(ValueError):
    """Nothing (or not enough) to retrain from; the message is one sentence for the user."""


@dataclass(frozen=True)
class Correction:
    """The latest label users gave one photo (by sha256), and every correction id behind it."""

    sha256: str
    label: str
    path: Path
    ids: tuple[int, ...]


@dataclass(frozen=True)
class TrafficPhoto:
    sha256: str
    path: Path


def store_exists(url: str) -> bool:
    """False for a SQLite store whose file is not there (opening it would create it)."""
    path = sqlite_path(engine_url(url))
    return path is None or path.is_file()


def read_corrections(store: FeedbackStore) -> tuple[list[Correction], int]:
    """One Correction per photo still on disk (the latest label wins, as in the export), and
    how many corrections were left out because their photo is gone."""
    latest: dict[str, Correction] = {}
    for record in store.feedback_records():  # in id order
        earlier = latest.get(record.image_sha256)
        latest[record.image_sha256] = Correction(
            sha256=record.image_sha256,
            label=record.label,
            path=store.image_path(record.image_sha256, record.image_ext),
            ids=(*(earlier.ids if earlier else ()), record.id),
        )
    kept = [c for c in latest.values() if c.path.is_file()]
    return kept, sum(len(c.ids) for c in latest.values() if not c.path.is_file())


def read_traffic(store: FeedbackStore, limit: int, exclude: set[str]) -> list[TrafficPhoto]:
    """The newest kept photos of recent predictions, each once, none of them corrected."""
    query = (
        sa.select(predictions.c.image_sha256, predictions.c.image_ext)
        .where(predictions.c.image_kept.is_(True))
        .order_by(predictions.c.created_at.desc())
    )
    photos: dict[str, TrafficPhoto] = {}
    with store.engine.connect() as connection:
        for row in connection.execute(query):
            sha256, ext = str(row.image_sha256), str(row.image_ext)
            if len(photos) >= limit:
                break
            path = store.image_path(sha256, ext)
            if sha256 not in exclude and sha256 not in photos and path.is_file():
                photos[sha256] = TrafficPhoto(sha256, path)
    return list(photos.values())


def split_holdout(
    corrections: Sequence[Correction], fraction: float, seed: int, min_holdout: int
) -> tuple[list[Correction], list[Correction]]:
    """(train, holdout), stratified by label and seeded. One photo is one item (its sha256),
    so a photo and its re-uploads never fall on both sides. A class with a single photo
    trains only. Raises RetrainInputError when the holdout would be under `min_holdout`."""
    by_label: dict[str, list[Correction]] = defaultdict(list)
    for correction in sorted(corrections, key=lambda c: c.sha256):
        by_label[correction.label].append(correction)
    rng = random.Random(seed)
    train: list[Correction] = []
    holdout: list[Correction] = []
    for label in sorted(by_label):
        items = by_label[label]
        rng.shuffle(items)
        count = min(len(items) - 1, max(1, round(len(items) * fraction))) if len(items) > 1 else 0
        holdout += items[:count]
        train += items[count:]
    if len(holdout) < min_holdout:
        needed = max(2, round(min_holdout / fraction))
        raise RetrainInputError(
            f"{len(corrections)} corrected photo(s) give a holdout of {len(holdout)}, fewer "
            f"than the {min_holdout} needed to compare the candidate with the current model: "
            f"send more corrections (about {needed} photos over the classes); nothing was "
            "trained or promoted."
        )
    return train, holdout


def data_fingerprint(*parts: Sequence[str]) -> str:
    """A short id of everything a candidate learnt from (photo hashes with labels)."""
    digest = hashlib.sha256("\n".join("\t".join(sorted(part)) for part in parts).encode())
    return f"sha256:{digest.hexdigest()[:16]}"
