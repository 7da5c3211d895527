"""A model trained here is quantized on its training split and gated on its held-out splits.

A run folder as `train.py` leaves it (run_dir/model + run_dir/split.csv, the data root in
the model's metadata), with the small colour model and real PNG files; real conversion.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from support.images import image_bytes
from support.service import CLASS_COLOURS, REPO, build_colour_model

from kitchenware.modelbuild.conversion import build_runtime_artifacts
from kitchenware.runtime.artifacts import OPENVINO_FP32, OPENVINO_INT8
from kitchenware.runtime.metadata import read_metadata, write_metadata

SIZE = 32
SUBSET_OF = {0: "train", 1: "train", 2: "train", 3: "val", 4: "test"}


def build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_bento", REPO / "build_bento_from_saved.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_bento"] = module
    spec.loader.exec_module(module)
    return module


def run_folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    rows = []
    for label, colour in CLASS_COLOURS.items():
        (data / label).mkdir(parents=True)
        for index, subset in SUBSET_OF.items():
            shade = tuple(int(c * (150 + 20 * index) + 30) for c in colour)
            (data / label / f"{index}.png").write_bytes(image_bytes(shade, size=(40, 30)))
            rows.append([f"{label}/{index}.png", label, subset])
    run_dir = tmp_path / "run"
    model_dir = build_colour_model(run_dir / "model", image_size=SIZE)
    metadata = read_metadata(model_dir)
    config = {**metadata.training_config, "data": str(data)}
    write_metadata(metadata.model_copy(update={"training_config": config}), model_dir)
    with (run_dir / "split.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "subset"], *rows])
    return model_dir


def test_a_trained_model_calibrates_on_train_and_is_gated_on_val_and_test(tmp_path: Path) -> None:
    model_dir = run_folder(tmp_path)
    sets = build_script().training_split_sets(model_dir)
    assert sets is not None
    calibration, gate = sets
    assert len(calibration.images) == 6 * 3 and calibration.description["disjoint_from_gate"]
    assert len(gate.images) == 6 * 2 and None not in gate.labels
    manifest = build_runtime_artifacts(model_dir, calibration, gate, log=lambda message: None)
    assert manifest.calibration_set["source"] == "the training split"
    assert manifest.gate_set["labelled"] == 12 and manifest.gate_set["images"] == 12
    fp32 = manifest.artifacts[OPENVINO_FP32].gate
    assert fp32.passed and fp32.reference_correct == fp32.candidate_correct
    assert manifest.artifacts[OPENVINO_INT8].gate.labelled == 12


def test_a_folder_without_a_split_uses_the_real_photos(tmp_path: Path) -> None:
    model_dir = build_colour_model(tmp_path / "model", image_size=SIZE)
    assert build_script().training_split_sets(model_dir) is None
