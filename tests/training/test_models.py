"""Backbones and head: serving contract, weights errors, freezing, cached-feature equivalence."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from kitchenware.training.models import (
    BACKBONES,
    AugmentationConfig,
    ModelConfigError,
    build_model,
    resolve_image_size,
    unfreeze_top_layers,
)

# The smallest size each backbone accepts keeps these builds to seconds.
SMALLEST = {name: max(spec.min_size, 32) for name, spec in BACKBONES.items()}


def _images(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_maps_0_255_rgb_to_probabilities(backbone: str) -> None:
    size = SMALLEST[backbone]
    built = build_model(backbone, 6, image_size=size, weights="none")
    probabilities = np.asarray(built.model(_images(3, size), training=False))
    assert probabilities.shape == (3, 6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert built.model.input_shape == (None, size, size, 3)


def test_unknown_backbone_names_the_valid_ones() -> None:
    with pytest.raises(ModelConfigError, match=r"resnet50.*xception") as info:
        build_model("resnet50", 6, weights="none")
    for name in BACKBONES:
        assert name in str(info.value)


def test_xception_refuses_images_under_71_px() -> None:
    with pytest.raises(ModelConfigError, match=r"64 px is too small for the xception.*71 px"):
        resolve_image_size("xception", 64)
    assert resolve_image_size("xception", None) == 299
    assert resolve_image_size("xception", 71) == 71


def test_imagenet_without_network_says_how_to_pass_a_local_file() -> None:
    """No network here: the real download path must fail with guidance, not a traceback."""
    with pytest.raises(ModelConfigError, match=r"failed.*--weights PATH.*\.h5"):
        build_model("mobilenetv3small", 6, image_size=32, weights="imagenet")


def test_scratch_has_no_imagenet_weights() -> None:
    with pytest.raises(ModelConfigError, match="scratch backbone has no pretrained weights"):
        build_model("scratch", 6, image_size=32, weights="imagenet")


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(ModelConfigError, match=rf"{re.escape(str(missing))}.*does not exist"):
        build_model("mobilenetv3small", 6, image_size=32, weights=str(missing))


def test_weights_of_another_architecture_are_refused_by_name(tmp_path: Path) -> None:
    other = tmp_path / "scratch.weights.h5"
    build_model("scratch", 6, image_size=32, weights="none").base.save_weights(other)
    with pytest.raises(
        ModelConfigError, match=f"{re.escape(str(other))} does not match the mobilenetv3small"
    ):
        build_model("mobilenetv3small", 6, image_size=32, weights=str(other))
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(ModelConfigError, match=f"{re.escape(str(garbage))} does not match"):
        build_model("mobilenetv3small", 6, image_size=32, weights=str(garbage))


def test_a_matching_weights_file_is_loaded_and_freezes_the_backbone(tmp_path: Path) -> None:
    import keras

    source = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    path = tmp_path / "mnv3s_notop.weights.h5"
    source.save_weights(path)
    built = build_model("mobilenetv3small", 6, image_size=48, weights=str(path))
    for mine, theirs in zip(built.base.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert built.frozen and not built.base.trainable
    random = build_model("mobilenetv3small", 6, image_size=48, weights="none")
    assert not random.frozen and random.base.trainable  # nothing worth keeping in random weights


def test_cached_features_plus_head_equal_the_full_model() -> None:
    """Training the head on cached features is only valid if this holds."""
    built = build_model("xception", 6, image_size=71, weights="none", freeze_backbone=True)
    images = _images(2, 71)
    via_features = built.head(built.feature_extractor(images, training=False), training=False)
    np.testing.assert_allclose(
        np.asarray(via_features), np.asarray(built.model(images, training=False)), atol=1e-6
    )


def test_augmentation_lives_only_in_the_training_model() -> None:
    augmentation = AugmentationConfig(flip=True, rotation=0.1, zoom=0.1, contrast=0.2)
    built = build_model("scratch", 6, image_size=32, weights="none", augmentation=augmentation)
    layer_names = [layer.name for layer in built.training_model.layers]
    assert {"aug_flip", "aug_rotation", "aug_zoom", "aug_contrast"} <= set(layer_names)
    assert not any(layer.name.startswith("aug_") for layer in built.model.layers)
    images = _images(4, 32)
    # At inference the augmentation is a no-op, so both models agree.
    np.testing.assert_allclose(
        np.asarray(built.training_model(images, training=False)),
        np.asarray(built.model(images, training=False)),
        atol=1e-6,
    )
    assert not np.allclose(
        np.asarray(built.training_model.get_layer("aug_rotation")(images, training=True)), images
    )


def test_fine_tuning_unfreezes_only_the_top_layers_and_never_batchnorm() -> None:
    import keras

    built = build_model("xception", 6, image_size=71, weights="none", freeze_backbone=True)
    assert not built.model.get_layer("xception_base").trainable_weights
    unfreeze_top_layers(built, 10)
    core = built.base.get_layer("xception")
    trainable = [layer for layer in core.layers if layer.trainable and layer.weights]
    assert trainable, "the top layers must train in phase 2"
    assert all(core.layers.index(layer) >= len(core.layers) - 10 for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
