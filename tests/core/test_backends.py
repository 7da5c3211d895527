"""OpenVINO artifacts made at import, the accuracy gate (including a forced failure), `auto`.

Real conversions of the small colour model (Keras -> SavedModel -> IR, NNCF int8), real
OpenVINO inference, and a subprocess that proves the OpenVINO path never imports TensorFlow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from service_support import CLASS_COLOURS, CLASS_NAMES, build_colour_model

from kitchenware.core.artifacts import (
    OPENVINO_BF16,
    OPENVINO_FP32,
    OPENVINO_INT8,
    gate_result,
    read_manifest,
)
from kitchenware.core.backends import AUTO, TENSORFLOW, BackendError, load_backend
from kitchenware.core.conversion import ImageSet, build_runtime_artifacts

SIZE = 32


def colour_images(per_class: int, seed: int) -> tuple[np.ndarray, list[int | None]]:
    """Noisy single-colour images of every class, float32 0-255, with their class index."""
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    labels: list[int | None] = []
    for index, name in enumerate(CLASS_NAMES):
        for _ in range(per_class):
            base = np.array(CLASS_COLOURS[name], np.float32) * 200 + 25
            noise = rng.normal(0, 12, (SIZE, SIZE, 3))
            images.append(np.clip(base + noise, 0, 255).astype(np.float32))
            labels.append(index)
    return np.stack(images), labels


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = build_colour_model(tmp_path_factory.mktemp("ov") / "model", image_size=SIZE)
    calibration, _ = colour_images(4, seed=1)
    gate_images, gate_labels = colour_images(6, seed=2)
    build_runtime_artifacts(
        model_dir,
        ImageSet(calibration, description={"source": "colour images"}),
        ImageSet(gate_images, labels=gate_labels, description={"source": "other colour images"}),
        log=lambda message: None,
    )
    return model_dir


def test_import_writes_ir_and_a_manifest_saying_how_each_was_made(converted: Path) -> None:
    manifest = read_manifest(converted)
    assert manifest is not None
    assert set(manifest.artifacts) == {OPENVINO_FP32, OPENVINO_BF16, OPENVINO_INT8}
    for record in manifest.artifacts.values():
        assert (converted / record.ir_path).is_file()
        assert (converted / record.ir_path).with_suffix(".bin").is_file()
    assert manifest.versions["openvino"].startswith("2026.")
    assert manifest.versions["nncf"].startswith("3.")
    int8 = manifest.artifacts[OPENVINO_INT8]
    assert int8.made_by["calibration"]["images"] == 24
    assert manifest.gate_set["images"] == 36 and manifest.gate_set["labelled"] == 36
    fp32 = manifest.artifacts[OPENVINO_FP32].gate
    assert fp32.passed and fp32.top1_agreement == 1.0 and fp32.max_abs_probability_diff < 1e-4
    assert fp32.reference_correct == fp32.candidate_correct == 36


def test_openvino_fp32_agrees_with_tensorflow(converted: Path) -> None:
    images, labels = colour_images(3, seed=5)
    reference = load_backend(converted, TENSORFLOW).predict_arrays(images)
    served = load_backend(converted, OPENVINO_FP32)
    served.warm_up()
    probabilities = served.predict_arrays(images)
    assert probabilities.shape == (len(images), len(CLASS_NAMES))
    assert np.abs(probabilities - reference).max() < 1e-4
    assert list(probabilities.argmax(axis=1)) == labels
    info = served.runtime_info()
    assert info["backend"] == OPENVINO_FP32 and info["precision"] == "f32" and info["threads"]


def test_int8_is_served_exactly_when_its_gate_passed(converted: Path) -> None:
    manifest = read_manifest(converted)
    assert manifest is not None
    gate = manifest.artifacts[OPENVINO_INT8].gate
    if gate.passed:
        assert load_backend(converted, OPENVINO_INT8).name == OPENVINO_INT8
    else:
        with pytest.raises(BackendError, match="failed the accuracy gate"):
            load_backend(converted, OPENVINO_INT8)


def test_auto_picks_the_fastest_gated_artifact(converted: Path) -> None:
    manifest = read_manifest(converted)
    assert manifest is not None
    expected = next(
        name
        for name in (OPENVINO_INT8, OPENVINO_BF16, OPENVINO_FP32)
        if manifest.artifacts[name].gate.passed
    )
    assert load_backend(converted, AUTO).name == expected


def test_forced_gate_failure_is_reported_refused_and_skipped_by_auto(tmp_path: Path) -> None:
    """int8 calibrated on black images only: its ranges are wrong for real colours."""
    model_dir = build_colour_model(tmp_path / "model", image_size=SIZE)
    gate_images, gate_labels = colour_images(6, seed=2)
    manifest = build_runtime_artifacts(
        model_dir,
        ImageSet(np.zeros((8, SIZE, SIZE, 3), np.float32), description={"source": "black"}),
        ImageSet(gate_images, labels=gate_labels),
        backends=(OPENVINO_FP32, OPENVINO_INT8),
        log=lambda message: None,
    )
    int8 = manifest.artifacts[OPENVINO_INT8].gate
    assert not int8.passed, int8
    assert "openvino-int8 failed the accuracy gate" in int8.reason
    assert int8.top1_agreement < 0.99 or int8.lost
    assert manifest.artifacts[OPENVINO_FP32].gate.passed
    with pytest.raises(BackendError, match="openvino-int8 failed the accuracy gate"):
        load_backend(model_dir, OPENVINO_INT8)
    assert load_backend(model_dir, AUTO).name == OPENVINO_FP32


def test_gate_rule_agreement_and_lost_labelled_photos() -> None:
    reference = np.eye(3)[[0, 1, 2, 0] * 25]  # 100 images
    candidate = reference.copy()
    candidate[0] = [0, 1, 0]  # one disagreement: 99 % agreement passes ...
    labels: list[int | None] = [None] * 100
    assert gate_result("x", reference, candidate, labels).passed
    labels[0] = 0  # ... unless that image is labelled and the reference gets it right
    lost = gate_result("x", reference, candidate, labels, names=[f"p{i}" for i in range(100)])
    assert not lost.passed and lost.lost == ["p0"]
    candidate[1] = [1, 0, 0]  # two disagreements: 98 % < 99 %
    low = gate_result("x", reference, candidate)
    assert not low.passed and "98.00%" in low.reason and "short by 1.00%" in low.reason


def test_unknown_or_missing_backends_say_what_to_do(tmp_path: Path) -> None:
    model_dir = build_colour_model(tmp_path / "plain", image_size=SIZE)
    with pytest.raises(BackendError, match="Unknown backend 'onnx'"):
        load_backend(model_dir, "onnx")
    with pytest.raises(BackendError, match=r"no OpenVINO artifacts.*--import-only"):
        load_backend(model_dir, OPENVINO_FP32)
    assert load_backend(model_dir, AUTO).name == TENSORFLOW  # falls back


def test_openvino_backend_never_imports_tensorflow(converted: Path) -> None:
    code = (
        "import sys, json, numpy as np\n"
        "from kitchenware.core.backends import load_backend\n"
        f"b = load_backend({str(converted)!r}, 'openvino-fp32')\n"
        f"p = b.predict_arrays(np.zeros((2, {SIZE}, {SIZE}, 3), np.float32))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(json.dumps({'shape': list(p.shape), 'heavy': heavy}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"shape": [2, len(CLASS_NAMES)], "heavy": []}
