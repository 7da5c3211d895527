"""The corrections a retrain learns from: one item per photo (sha256), the latest label
wins, and the holdout split is stratified, seeded and refuses to be too small."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from kitchenware.serving.feedback.store import open_store
from kitchenware.training.corrections import (
    Correction,
    RetrainInputError,
    read_corrections,
    split_holdout,
)


def _photo(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (seed % 256, (seed * 7) % 256, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def _corrections(per_class: dict[str, int]) -> list[Correction]:
    found, n = [], 0
    for label, count in per_class.items():
        for _ in range(count):
            found.append(Correction(f"{n:064x}", label, Path(f"{n}.png"), (n,)))
            n += 1
    return found


def test_a_reuploaded_photo_is_one_item_with_its_latest_label(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'feedback.db'}") as store:
        store.add_feedback("cup", image=_photo(1))
        store.add_feedback("glass", image=_photo(1))  # the same bytes again, relabelled
        store.add_feedback("fork", image=_photo(2))
        corrections, gone = read_corrections(store)
    assert gone == 0
    assert sorted((c.label, len(c.ids)) for c in corrections) == [("fork", 1), ("glass", 2)]


def test_holdout_is_stratified_seeded_and_disjoint() -> None:
    corrections = _corrections({"cup": 10, "fork": 6, "knife": 4, "spoon": 1})
    train, holdout = split_holdout(corrections, 0.3, seed=3, min_holdout=5)
    assert {c.sha256 for c in train}.isdisjoint({c.sha256 for c in holdout})
    assert len(train) + len(holdout) == len(corrections)
    assert Counter(c.label for c in holdout) == {"cup": 3, "fork": 2, "knife": 1}
    assert "spoon" in {c.label for c in train}  # one photo of a class trains only
    again, _ = split_holdout(list(reversed(corrections)), 0.3, seed=3, min_holdout=5)
    assert [c.sha256 for c in again] == [c.sha256 for c in train]  # same seed, same split
    other, _ = split_holdout(corrections, 0.3, seed=4, min_holdout=5)
    assert {c.sha256 for c in other} != {c.sha256 for c in train}


def test_too_few_corrections_for_a_holdout_is_a_refusal() -> None:
    with pytest.raises(RetrainInputError, match=r"give a holdout of 2, fewer than the 5"):
        split_holdout(_corrections({"cup": 3, "fork": 3}), 0.3, seed=0, min_holdout=5)
