"""train.py as a user runs it: bad input fails cleanly, good input lands a usable model.

Every run is a subprocess with its own BENTOML_HOME, so "nothing in the store" is checked
on a store no other test touches.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kitchenware.runtime.metadata import KITCHENWARE_CLASSES
from kitchenware.training.config import TrainConfig
from kitchenware.training.demo.generator import generate_demo_dataset

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--backbone", "scratch", "--image-size", "32", "--weights", "none"]
# The shipped demo model's recipe (Makefile demo-model) at 3x its learning rate, stopped
# at 0.96 validation accuracy: about 26 epochs instead of 41 at the demo model's rate.
LEARNING_RECIPE = (
    "--backbone mobilenetv3small --image-size 96 --weights none --flip --rotation 0.5 "
    "--zoom 0.1 --epochs 60 --patience 10 --lr-patience 4 --learning-rate 0.003 "
    "--target-accuracy 0.96 --fine-tune-epochs 0 --seed 0 --no-save-to-store"
)


def run_train(args: list[str], home: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stored_models(home: Path) -> list[Path]:
    return sorted((home / "models").rglob("model.keras")) if (home / "models").exists() else []


def assert_clean_failure(result: subprocess.CompletedProcess, home: Path, *fragments: str) -> str:
    """Exit 2, exactly one `error:` line (the last), no traceback, nothing in the store."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert stored_models(home) == []
    return errors[0]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kaggle layout, 4 images per class: enough to pass discovery and the split."""
    out = tmp_path_factory.mktemp("small") / "data"
    return generate_demo_dataset(out, per_class=4, seed=3, size_range=(48, 64), progress=False)


@pytest.fixture
def data_copy(small_set: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(small_set, tmp_path / "data"))


def _rewrite_csv(root: Path, change: dict[str, str]) -> None:
    rows = list(csv.DictReader((root / "train.csv").open()))
    for row in rows:
        row["label"] = change.get(row["Id"], row["label"])
    with (root / "train.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["Id", "label"])
        writer.writeheader()
        writer.writerows(rows)


def _first_id(root: Path) -> str:
    return next(csv.DictReader((root / "train.csv").open()))["Id"]


def test_missing_data_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    result = run_train(["--data", str(missing), *SMALL], tmp_path / "home")
    assert_clean_failure(result, tmp_path / "home", str(missing), "does not exist")


def test_empty_class_folder(tmp_path: Path) -> None:
    root = generate_demo_dataset(
        tmp_path / "folders",
        per_class=3,
        seed=1,
        layout="folders",
        size_range=(48, 64),
        progress=False,
    )
    for image in (root / "spoon").iterdir():
        image.unlink()
    result = run_train(["--data", str(root), *SMALL], tmp_path / "home")
    assert_clean_failure(result, tmp_path / "home", "spoon", "no images")


def test_csv_with_an_unknown_label(data_copy: Path, tmp_path: Path) -> None:
    _rewrite_csv(data_copy, {_first_id(data_copy): "teapot"})
    result = run_train(["--data", str(data_copy), *SMALL], tmp_path / "home")
    assert_clean_failure(result, tmp_path / "home", "train.csv", "teapot")


def test_csv_listing_a_missing_image(data_copy: Path, tmp_path: Path) -> None:
    image_id = _first_id(data_copy)
    (data_copy / "images" / f"{image_id}.jpg").unlink()
    result = run_train(["--data", str(data_copy), *SMALL], tmp_path / "home")
    assert_clean_failure(result, tmp_path / "home", "train.csv", f"{image_id}.jpg", "missing")


def test_corrupt_image_stops_unless_skipped(data_copy: Path, tmp_path: Path) -> None:
    image_id = _first_id(data_copy)
    image = data_copy / "images" / f"{image_id}.jpg"
    image.write_bytes(image.read_bytes()[:300])  # a truncated JPEG
    result = run_train(["--data", str(data_copy), *SMALL], tmp_path / "home")
    assert_clean_failure(result, tmp_path / "home", f"{image_id}.jpg", "--skip-bad")
    assert "corrupt" in result.stdout  # the data check's table names the problem


def test_unknown_backbone(small_set: Path, tmp_path: Path) -> None:
    result = run_train(["--data", str(small_set), "--backbone", "resnet"], tmp_path / "home")
    assert_clean_failure(result, tmp_path / "home", "resnet", "xception", "mobilenetv3small")


def test_image_size_xception_cannot_take(small_set: Path, tmp_path: Path) -> None:
    result = run_train(["--data", str(small_set), "--image-size", "64"], tmp_path / "home")
    assert_clean_failure(result, tmp_path / "home", "64 px", "xception", "71 px")


def test_weights_file_that_does_not_match(small_set: Path, tmp_path: Path) -> None:
    weights = tmp_path / "wrong.weights.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n but not really")
    args = ["--data", str(small_set), "--backbone", "mobilenetv3small", "--image-size", "32"]
    result = run_train([*args, "--weights", str(weights)], tmp_path / "home")
    assert_clean_failure(result, tmp_path / "home", str(weights), "does not match")


def test_imagenet_download_failure_explains_the_local_file_option(
    small_set: Path, tmp_path: Path
) -> None:
    args = ["--data", str(small_set), "--backbone", "mobilenetv3small", "--image-size", "32"]
    result = run_train([*args, "--weights", "imagenet"], tmp_path / "home")
    assert_clean_failure(result, tmp_path / "home", "failed", "--weights PATH")


def test_out_of_range_option_is_one_sentence(small_set: Path, tmp_path: Path) -> None:
    result = run_train(["--data", str(small_set), "--val-fraction", "1.5"], tmp_path / "home")
    assert_clean_failure(result, tmp_path / "home", "--val-fraction")


def test_help_lists_every_option_with_its_default(tmp_path: Path) -> None:
    result = run_train(["--help"], tmp_path / "home", timeout=120)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert re.search(rf"{flag}\b", text), flag
        if not field.is_required() and field.default is not None:
            assert f"(default: {field.default})" in text, flag


# --- training runs (minutes on 2 cores) ----------------------------------------------------


@pytest.fixture(scope="module")
def store_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bentoml-home")


def _in_store_home(home: Path, code: str) -> dict:
    """Run a snippet against `home`'s store (bentoml reads BENTOML_HOME at import)."""
    env = {**os.environ, "BENTOML_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_end_to_end_model_lands_in_the_store_and_loads_back(
    small_set: Path, store_home: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    args = ["--data", str(small_set), *SMALL, "--epochs", "2", "--fine-tune-epochs", "1"]
    args += ["--run-dir", str(tmp_path / "run"), "--export", str(export), "--batch-size", "8"]
    result = run_train(args, store_home)
    assert result.returncode == 0, result.stderr[-3000:]
    tag = re.search(r"model tag:\s+(\S+)", result.stdout).group(1)  # type: ignore[union-attr]
    assert f"bentoml models get {tag}" in result.stdout

    run = tmp_path / "run"
    for name in (
        "config.json",
        "split.csv",
        "history.json",
        "metrics.json",
        "training_curves.png",
        "confusion_matrix.png",
        "data_report.json",
    ):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    history = json.loads((run / "history.json").read_text())
    assert [phase["name"] for phase in history["phases"]] == ["all layers", "fine-tune"]

    shown = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "models", "get", tag, "-o", "json"],
        env={**os.environ, "BENTOML_HOME": str(store_home)},
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(shown.stdout)
    metadata = info["metadata"]
    assert metadata["class_names"] == sorted(KITCHENWARE_CLASSES)
    assert metadata["image_size"] == 32 and metadata["backbone"] == "scratch"
    assert metadata["dataset_fingerprint"].startswith("sha256:")
    assert 0 <= metadata["metrics"]["test_accuracy"] <= 1
    assert metadata["training_config"]["epochs"] == 2
    assert {"tensorflow", "keras", "bentoml"} <= set(metadata["framework_versions"])
    assert info["labels"]["backbone"] == "scratch"

    compared = _in_store_home(
        store_home,
        f"""
import json, numpy as np
from kitchenware.runtime.tensorflow_backend import Classifier
from kitchenware.modelbuild.store import model_dir
stored = Classifier.load(model_dir({tag!r}))
exported = Classifier.load({str(export)!r})
batch = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
a, b = stored.predict_arrays(batch), exported.predict_arrays(batch)
print(json.dumps({{"same": bool(np.array_equal(a, b)), "sums": a.sum(axis=1).tolist()}}))
""",
    )
    assert compared["same"]
    np.testing.assert_allclose(compared["sums"], 1.0, rtol=1e-5)


@pytest.mark.slow
def test_xception_trains_end_to_end_at_96_px(small_set: Path, tmp_path: Path) -> None:
    """The default architecture, frozen backbone (cached features) then fine-tuning."""
    args = [
        "--data",
        str(small_set),
        "--backbone",
        "xception",
        "--image-size",
        "96",
        "--weights",
        "none",
        "--freeze-backbone",
        "yes",
        "--epochs",
        "1",
        "--fine-tune-epochs",
        "1",
        "--fine-tune-layers",
        "20",
        "--batch-size",
        "8",
        "--run-dir",
        str(tmp_path / "run"),
        "--export",
        str(tmp_path / "export"),
        "--no-save-to-store",
    ]
    result = run_train(args, tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Phase 1: head on cached xception features" in result.stdout
    assert "Phase 2: fine-tuning the top 20" in result.stdout
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [p["name"] for p in history["phases"]] == ["head", "fine-tune"]
    assert history["phases"][0]["cached_features"] is True
    metadata = json.loads((tmp_path / "export" / "metadata.json").read_text())
    assert metadata["backbone"] == "xception" and metadata["image_size"] == 96
    assert stored_models(tmp_path / "home") == []  # --no-save-to-store is honoured


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_small_backbone_learns_the_generated_set(tmp_path: Path) -> None:
    """MobileNetV3-Small from random weights reaches >= 0.9 test accuracy on 360 held-out images.

    Why 0.9: chance is 1/6; the generator draws colours and backgrounds from the same
    distributions for every class, so only shape separates them, and a model at 0.9 has
    learned shapes. Measured here: 0.972 test accuracy (stopped at epoch 26, 0.961
    validation); stopping at 0.93 validation gave only 0.906 on test, too close to call,
    hence the 0.96 stop. Data size matters: with 120 images per class and no augmentation,
    this backbone overfit (0.83 training, 0.25 validation accuracy after 15 epochs).
    """
    data = generate_demo_dataset(tmp_path / "data", per_class=400, seed=7, progress=False)
    args = ["--data", str(data), "--run-dir", str(tmp_path / "run"), *shlex.split(LEARNING_RECIPE)]
    result = run_train(args, tmp_path / "home", timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split_sizes"]["test"] == 360
    assert metrics["test_accuracy"] >= 0.9, metrics["test"]["confusion_matrix"]
