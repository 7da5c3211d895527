"""A classifier on a backbone: pooling + head, augmentation, freezing for the two phases.

The model saved for serving is `BuiltModel.model`: RGB float32 in [0, 255] -> class
probabilities. Augmentation layers live only in `BuiltModel.training_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kitchenware.training.backbones import (
    BACKBONES,
    DEFAULT_BACKBONE,
    ModelConfigError,
    build_base,
    check_weights,
    get_backbone,
    resolve_image_size,
)

if TYPE_CHECKING:
    import keras

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "AugmentationConfig",
    "BuiltModel",
    "ModelConfigError",
    "build_model",
    "check_weights",
    "resolve_image_size",
    "unfreeze_top_layers",
]

# From-scratch runs are short; the applications' BN momentum (0.99-0.999) would leave the
# moving statistics far from the data's after a few hundred steps.
SCRATCH_BN_MOMENTUM = 0.9


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

    base = build_base(spec, size, resolved_weights)
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
