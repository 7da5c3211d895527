"""The runtime artifacts beside a model (OpenVINO IR files) and the accuracy gate they pass.

A model directory (exported, or an entry in the BentoML store) may hold, next to
`model.keras` and `metadata.json`:

    openvino/fp32/model.xml + model.bin   fp32 IR (also what `openvino-bf16` compiles)
    openvino/int8/model.xml + model.bin   NNCF post-training int8 IR
    runtimes.json                         how each was made and what its gate measured

`runtimes.json` is written at import/build time by `kitchenware.core.conversion` and read
at serving start by `kitchenware.core.backends`; this module needs numpy and pydantic only,
so the serving process can read it without TensorFlow or NNCF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kitchenware.core.files import write_json

RUNTIMES_FILENAME = "runtimes.json"
OPENVINO_DIR = "openvino"
IR_FILENAME = "model.xml"  # its weights sit beside it as model.bin
MANIFEST_VERSION = 1

OPENVINO_FP32 = "openvino-fp32"
OPENVINO_BF16 = "openvino-bf16"
OPENVINO_INT8 = "openvino-int8"
# Which IR each OpenVINO backend compiles, and the precision it asks the CPU plugin for.
IR_OF_BACKEND = {OPENVINO_FP32: "fp32", OPENVINO_BF16: "fp32", OPENVINO_INT8: "int8"}
PRECISION_OF_BACKEND = {OPENVINO_FP32: "f32", OPENVINO_BF16: "bf16", OPENVINO_INT8: "f32"}

# The gate: an artifact is served only if it agrees with the fp32 reference this often ...
MIN_TOP1_AGREEMENT = 0.99
# ... and loses none of the labelled photos the reference gets right.


class GateResult(BaseModel):
    """What the accuracy gate measured for one backend against the fp32 reference."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    passed: bool
    reason: str = Field(description="One sentence: why it passed or failed, with numbers.")
    images: int = Field(description="Gate images compared with the reference.")
    top1_agreement: float
    min_top1_agreement: float = MIN_TOP1_AGREEMENT
    max_abs_probability_diff: float
    labelled: int = Field(0, description="Gate images that carry a label.")
    reference_correct: int = 0
    candidate_correct: int = 0
    lost: list[str] = Field(
        default_factory=list, description="Labelled images the reference got right and this not."
    )


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
        raise ValueError(f"Runtime manifest {path} is invalid: {exc}") from exc


def write_manifest(manifest: RuntimeManifest, model_dir: Path | str) -> Path:
    return write_json(manifest.model_dump(mode="json"), Path(model_dir) / RUNTIMES_FILENAME)


def gate_result(
    backend: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: list[int | None] | None = None,
    names: list[str] | None = None,
    min_agreement: float = MIN_TOP1_AGREEMENT,
) -> GateResult:
    """Compare a candidate's probabilities with the reference's on the same gate images.

    `labels[i]` is the true class index of image i, or None when it has none; `names`
    name the images in the `lost` list.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape or reference.ndim != 2 or not len(reference):
        raise ValueError(
            f"Gate needs two (n, classes) arrays of the same shape, got {reference.shape} "
            f"and {candidate.shape}."
        )
    ref_top, cand_top = reference.argmax(axis=1), candidate.argmax(axis=1)
    agreement = float((ref_top == cand_top).mean())
    max_diff = float(np.abs(reference - candidate).max())
    labels = labels if labels is not None else [None] * len(reference)
    names = names if names is not None else [f"gate[{i}]" for i in range(len(reference))]
    labelled = [i for i, label in enumerate(labels) if label is not None]
    ref_right = [i for i in labelled if ref_top[i] == labels[i]]
    cand_right = [i for i in labelled if cand_top[i] == labels[i]]
    lost = [names[i] for i in ref_right if cand_top[i] != labels[i]]
    problems = []
    if agreement < min_agreement:
        problems.append(
            f"top-1 agreement with the fp32 reference is {agreement:.2%}, below "
            f"{min_agreement:.0%} (short by {min_agreement - agreement:.2%})"
        )
    if lost:
        problems.append(f"it gets {len(lost)} labelled image(s) wrong that fp32 gets right")
    if problems:
        reason = f"{backend} failed the accuracy gate: " + "; ".join(problems) + "."
    else:
        reason = (
            f"{backend} passed: top-1 agreement {agreement:.2%} on {len(reference)} images, "
            f"max probability difference {max_diff:.3f}, {len(cand_right)}/{len(labelled)} "
            "labelled images right."
        )
    return GateResult(
        backend=backend,
        passed=not problems,
        reason=reason,
        images=len(reference),
        top1_agreement=agreement,
        min_top1_agreement=min_agreement,
        max_abs_probability_diff=max_diff,
        labelled=len(labelled),
        reference_correct=len(ref_right),
        candidate_correct=len(cand_right),
        lost=lost,
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
