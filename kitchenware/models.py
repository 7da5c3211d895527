"""Backbones and the classification head: every model takes RGB float32 in [0, 255].

Each backbone scales its input inside the model (a Rescaling layer or the Keras
application's own `include_preprocessing`), so the shared preprocessing stays the same
for every backbone. Augmentation layers live only in the training model; the model that
is saved for serving is `BuiltModel.model`: image in [0, 255] -> class probabilities.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

# Keras is imported inside the builders, so argument errors and --help need no TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ banner out of the CLI output

WEIGHTS_CHOICES_HELP = "imagenet, none, or the path of a .h5/.weights.h5 file of the backbone"
# From-scratch runs are short; the applications' BN momentum (0.99-0.999) would leave the
# moving statistics far from the data's after a few hundred steps.
SCRATCH_BN_MOMENTUM = 0.9


class ModelConfigError(ValueError):
    """A backbone, image size or weights choice that cannot produce a model."""


@dataclass(frozen=True)
class AugmentationConfig:
    """Random training-time transforms; zero/False turns one off."""

    flip: bool = False
    rotation: float = 0.0  # fraction of a full turn, as keras.layers.RandomRotation takes it
    zoom: float = 0.0  # fraction of the image size
    contrast: float = 0.0  # fraction of the contrast range

    @property
    def enabled(self) -> bool:
        return self.flip or self.rotation > 0 or self.zoom > 0 or self.contrast > 0


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
    core = keras.applications.Xception(
        include_top=False, weights=weights, input_shape=(size, size, 3)
    )
    return keras.Model(inputs, core(scaled), name="xception_base")


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


def _build_base(spec: BackboneSpec, size: int, weights: str | None) -> keras.Model:
    """The base with its weights; the applications load imagenet or a file themselves."""
    try:
        with warnings.catch_warnings():
            # Keras warns per nested block when a mismatched file is tried; the error says it.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            return spec.build_base(size, weights)
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


def build_head(
    feature_dim: int, num_classes: int, *, dropout: float, inner_size: int
) -> keras.Model:
    """Pooled features -> class probabilities: dropout, optional Dense+ReLU+dropout, softmax."""
    import keras

    features = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dropout(dropout, name="head_dropout")(features)
    if inner_size > 0:
        x = keras.layers.Dense(inner_size, activation="relu", name="head_inner")(x)
        x = keras.layers.Dropout(dropout, name="head_inner_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(features, outputs, name="head")


def build_augmentation(config: AugmentationConfig, seed: int) -> list[keras.layers.Layer]:
    """Keras preprocessing layers; they only act when called with training=True."""
    import keras

    layers: list[keras.layers.Layer] = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, name="aug_flip"))
    if config.rotation > 0:
        layers.append(
            keras.layers.RandomRotation(config.rotation, seed=seed + 1, name="aug_rotation")
        )
    if config.zoom > 0:
        layers.append(keras.layers.RandomZoom(config.zoom, seed=seed + 2, name="aug_zoom"))
    if config.contrast > 0:
        # value_range keeps the [0, 255] input range the rest of the model expects.
        layers.append(
            keras.layers.RandomContrast(
                config.contrast, value_range=(0, 255), seed=seed + 3, name="aug_contrast"
            )
        )
    return layers


@dataclass
class BuiltModel:
    """The serving model and the parts training needs to reach separately."""

    model: keras.Model  # [0, 255] image -> probabilities; this is what gets saved
    training_model: keras.Model  # augmentation (if any) + model
    base: keras.Model  # the backbone's convolutional base, for freezing and fine-tuning
    feature_extractor: keras.Model  # [0, 255] image -> pooled features
    head: keras.Model  # pooled features -> probabilities (shared with `model`)
    backbone: str
    image_size: int
    frozen: bool


def build_model(
    backbone: str,
    num_classes: int,
    *,
    image_size: int | None = None,
    weights: str = "none",
    freeze_backbone: bool | None = None,
    dropout: float = 0.2,
    inner_size: int = 0,
    augmentation: AugmentationConfig | None = None,
    seed: int = 0,
) -> BuiltModel:
    """Build base + pooling + head. `freeze_backbone=None` freezes pretrained bases only."""
    import keras

    spec = get_backbone(backbone)
    size = resolve_image_size(backbone, image_size)
    resolved_weights = check_weights(backbone, weights)
    frozen = resolved_weights is not None if freeze_backbone is None else freeze_backbone

    base = _build_base(spec, size, resolved_weights)
    if resolved_weights is None:
        _set_bn_momentum(base, SCRATCH_BN_MOMENTUM)
    base.trainable = not frozen

    inputs = keras.Input((size, size, 3), name="image")
    # A frozen base runs its BatchNorm in inference mode, also later during fine-tuning.
    feature_map = base(inputs, training=False) if frozen else base(inputs)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(feature_map)
    feature_extractor = keras.Model(inputs, features, name=f"{backbone}_features")
    head = build_head(int(features.shape[-1]), num_classes, dropout=dropout, inner_size=inner_size)
    model = keras.Model(inputs, head(features), name=f"kitchenware_{backbone}")

    augment = build_augmentation(augmentation or AugmentationConfig(), seed)
    if augment:
        train_inputs = keras.Input((size, size, 3), name="image")
        x = train_inputs
        for layer in augment:
            x = layer(x)
        training_model = keras.Model(train_inputs, model(x), name="training_model")
    else:
        training_model = model
    return BuiltModel(
        model=model,
        training_model=training_model,
        base=base,
        feature_extractor=feature_extractor,
        head=head,
        backbone=backbone,
        image_size=size,
        frozen=frozen,
    )


def _set_bn_momentum(base: keras.Model, momentum: float) -> None:
    import keras

    for layer in _all_layers(base):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _all_layers(model: keras.Model) -> list[Any]:
    """Layers of a model, descending into nested models (Xception sits inside a wrapper)."""
    import keras

    found: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_all_layers(layer))
        else:
            found.append(layer)
    return found


def unfreeze_top_layers(built: BuiltModel, count: int) -> int:
    """Make the top `count` base layers trainable, BatchNorm excluded; returns how many."""
    import keras

    layers = _all_layers(built.base)
    built.base.trainable = True
    for layer in built.base.layers:
        if isinstance(layer, keras.Model):
            layer.trainable = True
    trainable = 0
    for index, layer in enumerate(layers):
        # BatchNorm stays frozen: small fine-tuning batches would wreck its statistics.
        unfreeze = index >= len(layers) - count and not isinstance(
            layer, keras.layers.BatchNormalization
        )
        layer.trainable = unfreeze
        trainable += int(unfreeze and bool(layer.weights))
    return trainable
