"""Rule 4 of the retrain: a candidate must pass every runtime gate the served model passed.

Measured on the published Xception (docs/models.md "Retrain from corrections"): candidates
retrained from 100 corrections failed int8 (3-5 top-1 flips on ~300 decisive gate images,
whatever the calibration) while the parent passes. The refusal must say why and what a
promotion would cost: served by bf16 instead of int8."""

from __future__ import annotations

import numpy as np

from kitchenware.runtime.artifacts import (
    OPENVINO_BF16,
    OPENVINO_FP32,
    OPENVINO_INT8,
    ArtifactRecord,
    RuntimeManifest,
    gate_result,
)
from kitchenware.training.retraining import runtime_rule

IMAGES = 300


def gated(backend: str, flips: int) -> ArtifactRecord:
    """`backend`'s real gate result against a decisive fp32 reference, `flips` top-1 flipped."""
    reference = np.tile([0.9, 0.1], (IMAGES, 1))
    candidate = reference.copy()
    candidate[:flips] = [0.4, 0.6]
    result = gate_result(backend, reference, candidate)
    return ArtifactRecord(backend=backend, ir_path=f"openvino/{backend}/model.xml", gate=result)


def manifest(int8_flips: int) -> RuntimeManifest:
    records = [gated(OPENVINO_FP32, 0), gated(OPENVINO_BF16, 0), gated(OPENVINO_INT8, int8_flips)]
    return RuntimeManifest(reference="Keras fp32", artifacts={r.backend: r for r in records})


def test_losing_int8_refuses_and_says_why_and_what_would_serve() -> None:
    check = runtime_rule(manifest(int8_flips=4), manifest(int8_flips=1))
    assert check.passed is False
    assert "openvino-int8 failed the accuracy gate: top-1 agreement 98.67%" in check.detail
    assert (
        "Promoted, the candidate would be served by openvino-bf16 where the current model "
        "is served by openvino-int8" in check.detail
    )


def test_a_gate_the_parent_failed_too_is_not_required() -> None:
    check = runtime_rule(manifest(int8_flips=4), manifest(int8_flips=5))
    assert check.passed is True
    assert "would be served" not in check.detail
