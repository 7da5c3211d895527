"""The two training phases, on a model from kitchenware.training.models.

Phase 1 trains the head (or, for random weights, the whole network); with a frozen
backbone and no augmentation the backbone runs once over the images and the head trains
on the cached features. Phase 2 fine-tunes the top backbone layers at a lower rate and
keeps phase 1's weights if it does not beat them on validation.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kitchenware.training.data import Sample, Split
from kitchenware.training.fitting import history_dict, phase_callbacks, predict_dataset
from kitchenware.training.models import BuiltModel, unfreeze_top_layers

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from kitchenware.training.config import TrainConfig

# Live progress bars on a terminal; one line per epoch in logs and CI.
_VERBOSE = 1 if sys.stdout.isatty() else 2
MAX_CACHED_BYTES = 2 << 30  # decoded float32 images kept in RAM; larger sets decode per epoch


def _images(
    samples: Sequence[Sample],
    class_names: Sequence[str],
    image_size: int,
    config: TrainConfig,
    *,
    shuffle: bool,
) -> tf.data.Dataset:
    from kitchenware.training.pipeline import make_dataset

    cache = len(samples) * image_size * image_size * 3 * 4 <= MAX_CACHED_BYTES
    return make_dataset(
        samples,
        class_names,
        image_size,
        batch_size=config.batch_size,
        shuffle=shuffle,
        seed=config.seed,
        cache=cache,
    )


def _compile(model: keras.Model, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )


def _callbacks(config: TrainConfig, run_dir: Path, name: str) -> list[Any]:
    return phase_callbacks(
        run_dir / "checkpoints" / f"{name}.weights.h5",
        patience=config.patience,
        lr_patience=config.lr_patience,
        target_accuracy=config.target_accuracy,
    )


def _phase(name: str, history: dict[str, list[float]], **details: Any) -> dict[str, Any]:
    return {"name": name, "epochs": len(history.get("loss", [])), "history": history, **details}


def run_phases(
    built: BuiltModel, split: Split, class_names: Sequence[str], config: TrainConfig, run_dir: Path
) -> list[dict[str, Any]]:
    """Fit phase 1 and, if asked, phase 2; returns one record per phase with its history."""
    size = built.image_size
    augmented = built.training_model is not built.model
    cached = built.frozen and config.cache_features and not augmented
    phases: list[dict[str, Any]] = []
    train_ds = None if cached else _images(split.train, class_names, size, config, shuffle=True)
    val_ds = None if cached else _images(split.val, class_names, size, config, shuffle=False)

    if cached:
        print(f"Phase 1: head on cached {built.backbone} features (backbone frozen)")

        def features(items: Any, name: str) -> tuple[Any, Any]:
            images = _images(items, class_names, size, config, shuffle=False)
            label = f"Backbone features, {name} split"
            return predict_dataset(
                built.feature_extractor, images, size, label=label, total=len(items)
            )

        train_x, train_y = features(split.train, "train")
        val_x, val_y = features(split.val, "validation")
        _compile(built.head, config.learning_rate)
        history = built.head.fit(
            train_x,
            train_y,
            batch_size=config.batch_size,
            epochs=config.epochs,
            validation_data=(val_x, val_y),
            shuffle=True,
            callbacks=_callbacks(config, run_dir, "phase1_head"),
            verbose=2,
        )
        phases.append(_phase("head", history_dict(history), cached_features=True))
    else:
        what = "head (backbone frozen)" if built.frozen else "all layers (random weights)"
        print(f"Phase 1: {what}" + (", with augmentation" if augmented else ""))
        _compile(built.training_model, config.learning_rate)
        history = built.training_model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            callbacks=_callbacks(config, run_dir, "phase1"),
            shuffle=False,  # the dataset shuffles itself
            verbose=_VERBOSE,
        )
        phases.append(
            _phase(
                "head" if built.frozen else "all layers",
                history_dict(history),
                cached_features=False,
            )
        )

    if config.fine_tune_epochs > 0:
        phases.append(_fine_tune(built, split, class_names, config, run_dir, phases[0]))
    return phases


def _fine_tune(
    built: BuiltModel,
    split: Split,
    class_names: Sequence[str],
    config: TrainConfig,
    run_dir: Path,
    previous: dict[str, Any],
) -> dict[str, Any]:
    size = built.image_size
    before = built.model.get_weights()
    best_before = max(previous["history"].get("val_accuracy", [0.0]))
    count = unfreeze_top_layers(built, config.fine_tune_layers)
    print(
        f"Phase 2: fine-tuning the top {config.fine_tune_layers} backbone layers "
        f"({count} with weights, BatchNorm frozen) at learning rate "
        f"{config.fine_tune_learning_rate}"
    )
    _compile(built.training_model, config.fine_tune_learning_rate)
    history = history_dict(
        built.training_model.fit(
            _images(split.train, class_names, size, config, shuffle=True),
            validation_data=_images(split.val, class_names, size, config, shuffle=False),
            epochs=config.fine_tune_epochs,
            callbacks=_callbacks(config, run_dir, "phase2"),
            shuffle=False,
            verbose=_VERBOSE,
        )
    )
    best_after = max(history.get("val_accuracy", [0.0]))
    kept_previous = best_after < best_before
    if kept_previous:
        # Fine-tuning made validation worse: keep the phase 1 model.
        built.model.set_weights(before)
        print(
            f"Phase 2 best val_accuracy {best_after:.4f} < phase 1 {best_before:.4f}: "
            "keeping the phase 1 weights."
        )
    return _phase(
        "fine-tune", history, layers=config.fine_tune_layers, kept_previous_weights=kept_previous
    )
