"""The runtime artifacts beside a model (OpenVINO IR files) and the accuracy gate they pass.

A model directory (exported, or an entry in the BentoML store) may hold, next to
`model.keras` and `metadata.json`:

    openvino/fp32/model.xml + model.bin   fp32 IR (also what `openvino-bf16` compiles)
    openvino/int8/model.xml + model.bin   NNCF post-training int8 IR
    runtimes.json                         how each was made and what its gate measured

`runtimes.json` is written at import/build time by `kitchenware.modelbuild.conversion` and read
at serving start by `kitchenware.runtime.backends`; this module needs numpy and pydantic only,
so the serving process can read it without TensorFlow or NNCF.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kitchenware.runtime.files import write_json

RUNTIMES_FILENAME = "runtimes.json"
OPENVINO_DIR = "openvino"
IR_FILENAME = "model.xml"  # its weights sit beside it as model.bin
MANIFEST_VERSION = 2  # 2: the gate rule of issue 16 (decisive images, |dp|), reference slice

OPENVINO_FP32 = "openvino-fp32"
OPENVINO_BF16 = "openvino-bf16"
OPENVINO_INT8 = "openvino-int8"
# Which IR each OpenVINO backend compiles, and the precision it asks the CPU plugin for.
IR_OF_BACKEND = {OPENVINO_FP32: "fp32", OPENVINO_BF16: "fp32", OPENVINO_INT8: "int8"}
PRECISION_OF_BACKEND = {OPENVINO_FP32: "f32", OPENVINO_BF16: "bf16", OPENVINO_INT8: "f32"}

# The gate (README "The accuracy gate"): an artifact serves only if, against the fp32
# reference, (a) it gets right every labelled image fp32 gets right, and is not less
# accurate on them; (b) it agrees on top-1 on >= 99 % of the images where fp32 is
# decisive (its top-1 probability leads the second by >= DECISIVE_MARGIN); (c) its
# probability error |dp| (per image: the largest over classes) is small on average and
# at worst. Agreement where fp32 is undecided is reported, never a reason to fail: a crop
# that misses the object is a coin toss between two classes, for fp32 as for int8.
#
# Chosen from the published model's gate set (306 images; Intel Xeon 207 with VNNI and
# BF16, 2026-12-06; bench/RESULTS.md). Margin 0.2 keeps 287 images (94 %); 9 of int8's 10
# top-1 flips and bf16's only one lie below it (fp32 top-1 0.25-0.50 there), and int8's
# 95th-percentile |dp| is 0.13: two probabilities moving that much in opposite directions
# swap any pair closer than ~0.25. Measured mean |dp|: int8 0.030, bf16 0.0043, fp32 <1e-5;
# 0.05 bounds a shown confidence's average error at 5 points. Worst |dp|: int8 0.53 (a crop
# fp32 put at 0.67), bf16 0.056; 0.75 refuses any artifact that turns one confident answer
# (0.85) into a near-zero one, while the 1 % of decisive flips (b) allows can pass.
MIN_DECISIVE_AGREEMENT = 0.99
DECISIVE_MARGIN = 0.2
MAX_MEAN_ABS_DIFF = 0.05
MAX_WORST_ABS_DIFF = 0.75


class GateRule(BaseModel):
    """The thresholds one gate applied (kept beside its numbers in runtimes.json)."""

    model_config = ConfigDict(extra="forbid")

    decisive_margin: float = DECISIVE_MARGIN
    min_decisive_agreement: float = MIN_DECISIVE_AGREEMENT
    max_mean_abs_diff: float = MAX_MEAN_ABS_DIFF
    max_worst_abs_diff: float = MAX_WORST_ABS_DIFF


class GateResult(BaseModel):
    """What the accuracy gate measured for one backend against the fp32 reference."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    passed: bool
    reason: str = Field(description="One sentence: why it passed or failed, with numbers.")
    images: int = Field(description="Gate images compared with the reference.")
    rule: GateRule = Field(default_factory=GateRule)
    # (a) labelled images
    labelled: int = Field(0, description="Gate images that carry a label.")
    reference_correct: int = 0
    candidate_correct: int = 0
    lost: list[str] = Field(
        default_factory=list, description="Labelled images the reference got right and this not."
    )
    # (b) top-1 agreement where fp32 is decisive; reported only where it is not
    decisive_images: int = 0
    decisive_agreement: float = 0.0
    decisive_disagreements: list[str] = Field(default_factory=list)
    undecided_images: int = 0
    undecided_agreement: float | None = Field(None, description="Reported, never failing.")
    top1_agreement: float = Field(0.0, description="Over every gate image (reported).")
    # (c) probability error: per image the largest |dp| over classes
    mean_abs_probability_diff: float = 0.0
    max_abs_probability_diff: float = 0.0


class ArtifactRecord(BaseModel):
    """One runtime artifact: where it is, how it was made, and its gate result."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    ir_path: str = Field(description="IR file relative to the model directory.")
    made_by: dict[str, Any] = Field(
        default_factory=dict,
        description="Conversion steps, tool versions, calibration set and its size.",
    )
    gate: GateResult


class RuntimeManifest(BaseModel):
    """Every runtime artifact of one model; `runtimes.json`."""

    model_config = ConfigDict(extra="forbid")

    manifest_version: int = MANIFEST_VERSION
    reference: str = Field(description="What the gate compared against (the Keras fp32 model).")
    gate_set: dict[str, Any] = Field(default_factory=dict, description="What the gate ran on.")
    calibration_set: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    created_at: str = ""
    cpu: dict[str, Any] = Field(
        default_factory=dict, description="The CPU the gate ran on (int8 depends on it)."
    )
    reference_slice: dict[str, Any] = Field(
        default_factory=dict, description="The gate images kept for the start-up check."
    )
    artifacts: dict[str, ArtifactRecord] = Field(default_factory=dict)

    def passed(self, backend: str) -> bool:
        record = self.artifacts.get(backend)
        return record is not None and record.gate.passed

    def failures(self) -> list[GateResult]:
        return [record.gate for record in self.artifacts.values() if not record.gate.passed]


def read_manifest(model_dir: Path | str) -> RuntimeManifest | None:
    """The model's runtimes.json, or None for a model without runtime artifacts."""
    path = Path(model_dir) / RUNTIMES_FILENAME
    if not path.is_file():
        return None
    try:
        return RuntimeManifest.model_validate_json(path.read_text())
    except ValueError as exc:
        version = manifest_version(model_dir)
        if version is not None and version < MANIFEST_VERSION:
            raise ValueError(
                f"Runtime manifest {path} was made by an older import (version {version}, "
                f"this code reads {MANIFEST_VERSION}): import the model again "
                "(`python build_bento_from_saved.py --import-only`)."
            ) from exc
        raise ValueError(f"Runtime manifest {path} is invalid: {exc}") from exc


def manifest_version(model_dir: Path | str) -> int | None:
    """The manifest_version in runtimes.json, None without a readable one."""
    try:
        version = json.loads((Path(model_dir) / RUNTIMES_FILENAME).read_text())["manifest_version"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return version if isinstance(version, int) else None


def has_current_manifest(model_dir: Path | str) -> bool:
    """Whether the model carries runtime artifacts this code can serve (else re-import)."""
    return manifest_version(model_dir) == MANIFEST_VERSION


def write_manifest(manifest: RuntimeManifest, model_dir: Path | str) -> Path:
    return write_json(manifest.model_dump(mode="json"), Path(model_dir) / RUNTIMES_FILENAME)


def gate_result(
    backend: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: Sequence[int | None] | None = None,
    names: Sequence[str] | None = None,
    rule: GateRule | None = None,
) -> GateResult:
    """Compare a candidate's probabilities with the reference's on the same gate images.

    `labels[i]` is the true class index of image i, or None when it has none; `names`
    name the images in the `lost` and disagreement lists.
    """
    rule = rule or GateRule()
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape or reference.ndim != 2 or not len(reference):
        raise ValueError(
            f"Gate needs two (n, classes) arrays of the same shape, got {reference.shape} "
            f"and {candidate.shape}."
        )
    ref_top, cand_top = reference.argmax(axis=1), candidate.argmax(axis=1)
    agrees = ref_top == cand_top
    decisive = decisive_mask(reference, rule.decisive_margin)
    per_image_diff = np.abs(reference - candidate).max(axis=1)
    labels = list(labels) if labels is not None else [None] * len(reference)
    names = list(names) if names is not None else [f"gate[{i}]" for i in range(len(reference))]
    labelled = [i for i, label in enumerate(labels) if label is not None]
    ref_right = [i for i in labelled if ref_top[i] == labels[i]]
    cand_right = [i for i in labelled if cand_top[i] == labels[i]]
    result = GateResult(
        backend=backend,
        passed=False,
        reason="",
        images=len(reference),
        rule=rule,
        labelled=len(labelled),
        reference_correct=len(ref_right),
        candidate_correct=len(cand_right),
        lost=[names[i] for i in ref_right if cand_top[i] != labels[i]],
        decisive_images=int(decisive.sum()),
        decisive_agreement=_share(agrees[decisive]),
        decisive_disagreements=[names[i] for i in np.flatnonzero(decisive & ~agrees)],
        undecided_images=int((~decisive).sum()),
        undecided_agreement=_share(agrees[~decisive]) if (~decisive).any() else None,
        top1_agreement=_share(agrees),
        mean_abs_probability_diff=float(per_image_diff.mean()),
        max_abs_probability_diff=float(per_image_diff.max()),
    )
    problems = gate_problems(result)
    result.passed = not problems
    result.reason = (
        f"{backend} failed the accuracy gate: " + "; ".join(problems) + "."
        if problems
        else f"{backend} passed: {gate_numbers(result)}."
    )
    return result


def decisive_mask(probabilities: np.ndarray, margin: float) -> np.ndarray:
    """Images where the top-1 probability leads the second by at least `margin`."""
    top2 = np.sort(np.asarray(probabilities, dtype=np.float64), axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0] >= margin)


def _share(flags: np.ndarray) -> float:
    return float(flags.mean()) if len(flags) else 1.0


def gate_problems(result: GateResult) -> list[str]:
    """The rule, one sentence per broken part (empty: the artifact may serve)."""
    rule, problems = result.rule, []
    if result.lost:
        problems.append(
            f"it gets {len(result.lost)} labelled image(s) wrong that fp32 gets right "
            f"({', '.join(result.lost)})"
        )
    if result.candidate_correct < result.reference_correct:
        problems.append(
            f"{result.candidate_correct}/{result.labelled} labelled images right, fp32 "
            f"{result.reference_correct}"
        )
    if result.decisive_agreement < rule.min_decisive_agreement:
        problems.append(
            f"top-1 agreement {result.decisive_agreement:.2%} on the {result.decisive_images} "
            f"images where fp32 is decisive (margin >= {rule.decisive_margin:g}), below "
            f"{rule.min_decisive_agreement:.0%}"
        )
    if result.mean_abs_probability_diff > rule.max_mean_abs_diff:
        problems.append(
            f"mean |dp| {result.mean_abs_probability_diff:.4f} > {rule.max_mean_abs_diff:g}"
        )
    if result.max_abs_probability_diff > rule.max_worst_abs_diff:
        problems.append(
            f"worst |dp| {result.max_abs_probability_diff:.4f} > {rule.max_worst_abs_diff:g}"
        )
    return problems


def gate_numbers(result: GateResult) -> str:
    """The measured numbers in one clause, for logs and reasons."""
    undecided = (
        f"{result.undecided_agreement:.2%} on {result.undecided_images} undecided (reported)"
        if result.undecided_agreement is not None
        else "no undecided images"
    )
    return (
        f"{result.candidate_correct}/{result.labelled} labelled right (fp32 "
        f"{result.reference_correct}), top-1 agreement {result.decisive_agreement:.2%} on "
        f"{result.decisive_images} decisive images (margin >= {result.rule.decisive_margin:g}), "
        f"{undecided}, |dp| mean {result.mean_abs_probability_diff:.4f} worst "
        f"{result.max_abs_probability_diff:.4f}"
    )


def describe(manifest: RuntimeManifest) -> str:
    """One line per artifact for logs and CLIs."""
    return "\n".join(record.gate.reason for record in manifest.artifacts.values())


def manifest_summary(model_dir: Path | str) -> dict[str, Any]:
    """The gate results of a model as plain JSON (for reports and logs)."""
    manifest = read_manifest(model_dir)
    if manifest is None:
        return {}
    return {
        name: record.gate.model_dump(mode="json") for name, record in manifest.artifacts.items()
    }
