"""The accuracy gate again, on the CPU that serves: a small reference slice in the model.

int8 (and bf16) arithmetic depends on the CPU (VNNI or not, native bf16 or not), so a gate
passed where the model was imported says little about the CPU a container lands on. The
import keeps a slice of its gate set beside the IR (`openvino/reference_slice.npz`: some
decisive gate images, every labelled photo, and fp32's probabilities on them); before a
backend serves, `load_backend` runs it on that slice here and applies the same rule
(runtime/artifacts.gate_result). ~41 images at 150 px: a few tenths of a second.

The workers of one `bentoml serve` run on the same CPU and load the same artifact, so
they share one check (`run_check_once_per_server`): the first to get there runs it on
every core while the others wait on a file lock, then read its verdict. Each worker
checking alone doubled the check's time at start on 2 cores (both ran it at once), and
could let two workers serve different artifacts on a borderline slice.

numpy only (plus the backend handed in): the serving process reads it without TensorFlow.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware.runtime.artifacts import OPENVINO_DIR, GateResult, GateRule, gate_result
from kitchenware.runtime.files import write_json

REFERENCE_SLICE = f"{OPENVINO_DIR}/reference_slice.npz"
SLICE_DECISIVE_IMAGES = 32
SLICE_SEED = 7
# Tightens (or loosens) the check's mean |dp| bound at serving start: for operators who
# want a stricter start-up check, and for the forced-failure tests.
ENV_MAX_MEAN_ABS_DIFF = "KITCHENWARE_CHECK_MAX_MEAN_ABS_DIFF"
# Verdicts the workers of one server share, in the temp folder (a tmpfs in the container).
SHARED_VERDICTS = "kitchenware-startup-check"
STALE_VERDICT_S = 86_400.0  # older ones belong to servers long gone: removed when writing


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


@dataclass
class CheckOutcome:
    result: GateResult
    seconds: float  # how long the check ran (in whichever worker ran it)
    shared: bool  # True: another worker of this server ran it; this one read its verdict


def server_instance() -> str | None:
    """'<server pid>-<its start time>' inside a BentoML worker, else None.

    BentoML's workers are children of the `bentoml serve` process; its pid plus start time
    (field 22 of /proc/<pid>/stat) names one server run, even when pids are reused. bentoml
    is looked up, not imported: outside a server (predict.py, tests) nothing is shared.
    """
    bentoml = sys.modules.get("bentoml")
    context = getattr(bentoml, "server_context", None)
    if getattr(context, "worker_index", None) is None:
        return None
    parent = os.getppid()
    try:
        started = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{parent}-{started}"


def verdict_key(instance: str, model_dir: Path, backend: str, rule: GateRule) -> str:
    """Same server, same artifact files, same rule: the same verdict."""
    files = sorted(Path(model_dir, OPENVINO_DIR).rglob("*"))
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    text = json.dumps([instance, str(Path(model_dir).resolve()), backend, rule.model_dump(), stats])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def run_check_once_per_server(
    model_dir: Path, backend: Any, reference: ReferenceSlice, rule: GateRule
) -> CheckOutcome:
    """run_check, run by one worker per server; the others wait for and reuse its verdict.

    Outside a BentoML worker, or when the temp folder is not writable, every call checks.
    """
    instance = server_instance()
    folder = Path(tempfile.gettempdir()) / SHARED_VERDICTS
    if instance is None:
        return CheckOutcome(*run_check(backend, reference, rule), shared=False)
    key = verdict_key(instance, model_dir, backend.name, check_rule(rule))
    try:
        folder.mkdir(exist_ok=True)
        lock = (folder / f"{key}.lock").open("w")
    except OSError:
        return CheckOutcome(*run_check(backend, reference, rule), shared=False)
    verdict = folder / f"{key}.json"
    with lock:  # closing the file (or the worker dying) releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            saved = json.loads(verdict.read_text())
            result = GateResult.model_validate(saved["result"])
            return CheckOutcome(result, float(saved["seconds"]), shared=True)
        except (OSError, ValueError, KeyError):
            pass  # no verdict yet (or a torn one): this worker checks
        result, seconds = run_check(backend, reference, rule)
        _write_verdict(folder, verdict, {"result": result.model_dump(), "seconds": seconds})
        return CheckOutcome(result, seconds, shared=False)


def _write_verdict(folder: Path, verdict: Path, content: dict[str, Any]) -> None:
    try:
        now = time.time()
        for old in folder.iterdir():
            if now - old.stat().st_mtime > STALE_VERDICT_S:
                old.unlink(missing_ok=True)
        write_json(content, verdict)
    except OSError:
        pass  # the other workers then run the check themselves
