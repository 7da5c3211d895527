"""The backbones a model can be built on: registry, size and weights checks, base builders.

Every base takes RGB float32 in [0, 255] and scales it inside the model (a Rescaling
layer or the Keras application's own `include_preprocessing`), so the shared
preprocessing is the same for every backbone. Keras is imported inside the builders, so
argument errors and `train.py --help` need no TensorFlow.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ banner out of the CLI output

WEIGHTS_CHOICES_HELP = "imagenet, none, or the path of a .h5/.weights.h5 file of the backbone"


class ModelConfigError(ValueError):
    """A backbone, image size or weights choice that cannot produce a model."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone's convolutional base without its top."""

    name: str
    default_size: int
    min_size: int
    has_imagenet: bool
    build_base: Callable[[int, str | None], keras.Model]  # (image_size, weights) -> base
    description: str


def _xception_base(size: int, weights: str | None) -> keras.Model:
    import keras

    inputs = keras.Input((size, size, 3), name="xception_input")
    # Xception expects [-1, 1]; the scaling is part of the model so serving feeds [0, 255].
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_minus1_1")(inputs)
    core = _xception_core(size, weights)
    return keras.Model(inputs, core(scaled), name="xception_base")


def _xception_core(size: int, weights: str | None) -> keras.Model:
    """keras.applications.Xception; `imagenet` tries Keras' download first and, when that
    fails, uses the verified ImageNet base inside the published kitchenware model."""
    import keras

    shape = (size, size, 3)
    if weights != "imagenet":
        return keras.applications.Xception(include_top=False, weights=weights, input_shape=shape)
    try:
        return keras.applications.Xception(include_top=False, weights="imagenet", input_shape=shape)
    except Exception as exc:  # Keras raises a bare Exception for a failed download
        if "URL fetch failure" not in str(exc):
            raise
        download_error = _first_line(exc)
    from kitchenware.modelbuild.pretrained import (
        REQUIREMENT,
        PretrainedError,
        imagenet_xception_weights,
    )

    try:
        path = imagenet_xception_weights()
    except PretrainedError as exc:
        raise ModelConfigError(
            f"Downloading the ImageNet weights of xception failed ({download_error}) and so "
            f"did the offline copy from {REQUIREMENT} ({exc}): pass --weights PATH with a "
            "local Keras .h5/.weights.h5 file of xception without top, or --weights none."
        ) from exc
    print(
        f"Keras could not download the ImageNet Xception weights ({download_error}); using "
        f"the ImageNet base of {REQUIREMENT} instead, verified exactly: {path}",
        flush=True,
    )
    return keras.applications.Xception(include_top=False, weights=str(path), input_shape=shape)


def _mobilenetv3small_base(size: int, weights: str | None) -> keras.Model:
    import keras

    return keras.applications.MobileNetV3Small(
        input_shape=(size, size, 3),
        include_top=False,
        weights=weights,
        include_preprocessing=True,  # its own Rescaling to [-1, 1]
    )


def _efficientnetv2b0_base(size: int, weights: str | None) -> keras.Model:
    import keras

    return keras.applications.EfficientNetV2B0(
        input_shape=(size, size, 3),
        include_top=False,
        weights=weights,
        include_preprocessing=True,  # its own Rescaling + Normalization
    )


def _scratch_base(size: int, weights: str | None) -> keras.Model:
    """The from-scratch CNN the original project compared against: Conv-BN-ReLU-MaxPool x4."""
    import keras

    inputs = keras.Input((size, size, 3), name="scratch_input")
    x = keras.layers.Rescaling(1 / 255.0, name="to_0_1")(inputs)
    for block, filters in enumerate((32, 64, 128, 256), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{block}")(x)
        x = keras.layers.ReLU(name=f"relu{block}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{block}")(x)
    base = keras.Model(inputs, x, name="scratch_base")
    if weights is not None:
        base.load_weights(weights)  # a file saved from this base (e.g. an earlier run)
    return base


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("xception", 299, 71, True, _xception_base, "Xception, 20.9 M parameters"),
        BackboneSpec(
            "mobilenetv3small", 224, 32, True, _mobilenetv3small_base, "MobileNetV3-Small, 0.9 M"
        ),
        BackboneSpec(
            "efficientnetv2b0", 224, 32, True, _efficientnetv2b0_base, "EfficientNetV2-B0, 5.9 M"
        ),
        BackboneSpec("scratch", 128, 32, False, _scratch_base, "4-block CNN, no pretraining"),
    )
}
DEFAULT_BACKBONE = "xception"


def get_backbone(name: str) -> BackboneSpec:
    spec = BACKBONES.get(name)
    if spec is None:
        raise ModelConfigError(
            f"Unknown backbone {name!r}: choose one of {', '.join(sorted(BACKBONES))}."
        )
    return spec


def resolve_image_size(backbone: str, image_size: int | None) -> int:
    """The image size to train at: the backbone's default, or a checked explicit one."""
    spec = get_backbone(backbone)
    if image_size is None:
        return spec.default_size
    if image_size < spec.min_size:
        raise ModelConfigError(
            f"Image size {image_size} px is too small for the {backbone} backbone, "
            f"which needs at least {spec.min_size} px."
        )
    return image_size


def check_weights(backbone: str, weights: str) -> str | None:
    """Validate `--weights` before any work; returns None, "imagenet" or a file path."""
    spec = get_backbone(backbone)
    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        if not spec.has_imagenet:
            raise ModelConfigError(
                f"The {backbone} backbone has no pretrained weights: pass --weights none."
            )
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise ModelConfigError(
            f"Weights file {path} does not exist (--weights takes {WEIGHTS_CHOICES_HELP})."
        )
    if not path.name.endswith(".h5"):
        raise ModelConfigError(
            f"Weights file {path} is not a Keras .h5 or .weights.h5 file of the {backbone} "
            "backbone without top."
        )
    return str(path)


def build_base(spec: BackboneSpec, size: int, weights: str | None) -> keras.Model:
    """The base with its weights; the applications load imagenet or a file themselves."""
    try:
        with warnings.catch_warnings():
            # Keras warns per nested block when a mismatched file is tried; the error says it.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            return spec.build_base(size, weights)
    except ModelConfigError:
        raise
    except Exception as exc:  # Keras, h5py and TF raise assorted types here
        if weights == "imagenet" and "URL fetch failure" in str(exc):
            raise ModelConfigError(
                f"Downloading the ImageNet weights of {spec.name} failed ({_first_line(exc)}): "
                f"pass --weights PATH with a local Keras .h5/.weights.h5 file of {spec.name} "
                "without top (keras.applications, include_top=False), or --weights none."
            ) from exc
        if weights not in (None, "imagenet"):
            raise ModelConfigError(
                f"Weights file {weights} does not match the {spec.name} backbone without top "
                f"at {size} px ({_first_line(exc)})."
            ) from exc
        raise


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()[0].rstrip(":") if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
