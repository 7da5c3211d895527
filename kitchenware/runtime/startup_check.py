"""The accuracy gate again, on the CPU that serves: a small reference slice in the model.

int8 (and bf16) arithmetic depends on the CPU (VNNI or not, native bf16 or not), so a gate
passed where the model was imported says little about the CPU a container lands on. The
import keeps a slice of its gate set beside the IR (`openvino/reference_slice.npz`: some
decisive gate images, every labelled photo, and fp32's probabilities on them); before a
backend serves, `load_backend` runs it on that slice here and applies the same rule
(runtime/artifacts.gate_result). ~41 images at 150 px: a few tenths of a second.

numpy only (plus the backend handed in): the serving process reads it without TensorFlow.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware.runtime.artifacts import OPENVINO_DIR, GateResult, GateRule, gate_result

REFERENCE_SLICE = f"{OPENVINO_DIR}/reference_slice.npz"
SLICE_DECISIVE_IMAGES = 32
SLICE_SEED = 7
# Tightens (or loosens) the check's mean |dp| bound at serving start: for operators who
# want a stricter start-up check, and for the forced-failure tests.
ENV_MAX_MEAN_ABS_DIFF = "KITCHENWARE_CHECK_MAX_MEAN_ABS_DIFF"


@dataclass
class ReferenceSlice:
    images: np.ndarray  # (n, size, size, 3) float32 in [0, 255]
    reference: np.ndarray  # (n, classes) fp32 probabilities
    labels: list[int | None]
    names: list[str]


def slice_indices(
    decisive: np.ndarray, labels: list[int | None], agreeing: np.ndarray
) -> np.ndarray:
    """Which gate images go into the slice: every labelled one, plus up to 32 decisive
    crops on which every artifact agreed with fp32 at import (seeded choice).

    A crop an artifact already got wrong at import is left out: on 32 images the 99 % rule
    allows no miss, and the check is there to catch a CPU that changes the arithmetic (many
    misses, large |dp|), not to re-draw the import's lottery.
    """
    labelled = [i for i, label in enumerate(labels) if label is not None]
    pool = np.flatnonzero(decisive & agreeing)
    pool = np.setdiff1d(pool, labelled)
    rng = np.random.default_rng(SLICE_SEED)
    chosen = rng.choice(pool, size=min(SLICE_DECISIVE_IMAGES, len(pool)), replace=False)
    return np.sort(np.concatenate([np.asarray(labelled, dtype=int), chosen.astype(int)]))


def write_reference_slice(
    model_dir: Path,
    images: np.ndarray,
    reference: np.ndarray,
    labels: list[int | None],
    names: list[str],
) -> dict[str, Any]:
    """Store the slice beside the IR; returns its description for runtimes.json."""
    path = Path(model_dir) / REFERENCE_SLICE
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(images)
    # Model inputs made from 8-bit photos are whole numbers: uint8 keeps them exactly.
    exact = bool(np.array_equal(pixels, np.clip(np.round(pixels), 0, 255)))
    # Uncompressed (2.8 MB for 41 images at 150 px): read at every start, inflating costs.
    np.savez(
        path,
        images=pixels.astype(np.uint8) if exact else pixels.astype(np.float32),
        reference=np.asarray(reference, dtype=np.float32),
        labels=np.array([-1 if label is None else label for label in labels]),
        names=np.array(names),
    )
    return {
        "path": REFERENCE_SLICE,
        "images": len(pixels),
        "labelled": sum(label is not None for label in labels),
        "bytes": path.stat().st_size,
    }


def read_reference_slice(model_dir: Path | str) -> ReferenceSlice | None:
    path = Path(model_dir) / REFERENCE_SLICE
    if not path.is_file():
        return None
    with np.load(path) as data:
        return ReferenceSlice(
            images=data["images"].astype(np.float32),
            reference=data["reference"].astype(np.float64),
            labels=[None if label < 0 else int(label) for label in data["labels"]],
            names=[str(name) for name in data["names"]],
        )


def check_rule(rule: GateRule) -> GateRule:
    """The import's rule, with the operator's override of the mean |dp| bound."""
    override = os.environ.get(ENV_MAX_MEAN_ABS_DIFF)
    if not override:
        return rule
    return rule.model_copy(update={"max_mean_abs_diff": float(override)})


def run_check(backend: Any, reference: ReferenceSlice, rule: GateRule) -> tuple[GateResult, float]:
    """Run `backend` on the slice and apply the rule; (result, seconds)."""
    started = time.perf_counter()
    probabilities = backend.predict_arrays(reference.images)
    result = gate_result(
        backend.name,
        reference.reference,
        probabilities,
        reference.labels,
        reference.names,
        check_rule(rule),
    )
    seconds = time.perf_counter() - started
    if not result.passed:
        result.reason = result.reason.replace(
            "failed the accuracy gate", "failed the start-up check on this CPU", 1
        )
    return result, seconds
