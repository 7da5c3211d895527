"""Keras fitting helpers for the training phases: callbacks, cached features, batched prediction."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kitchenware.runtime.tensorflow_backend import traced_call

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


def target_accuracy_stop(target: float) -> keras.callbacks.Callback:
    """Stop a phase once validation accuracy reaches `target`, as the original project did."""
    import keras

    class TargetAccuracyStop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = (logs or {}).get("val_accuracy")
            if value is not None and value >= target:
                print(f"\nEpoch {epoch + 1}: val_accuracy {value:.4f} >= {target}; stopping.")
                self.model.stop_training = True

    return TargetAccuracyStop()


def phase_callbacks(
    checkpoint: Path, *, patience: int, lr_patience: int, target_accuracy: float | None
) -> list[keras.callbacks.Callback]:
    """Early stopping (best weights back), LR on plateau, optional target stop, checkpoint."""
    import keras

    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=patience, restore_best_weights=True, verbose=1
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.3, patience=lr_patience, min_lr=1e-7, verbose=1
        ),
        keras.callbacks.ModelCheckpoint(
            str(checkpoint), monitor="val_accuracy", save_best_only=True, save_weights_only=True
        ),
    ]
    if target_accuracy is not None:
        # EarlyStopping restores the best weights on train end, whichever callback stopped.
        callbacks.append(target_accuracy_stop(target_accuracy))
    return callbacks


def predict_dataset(
    model: keras.Model, dataset: tf.data.Dataset, image_size: int, *, label: str, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Run `model` over an (images, labels) dataset with a progress bar; (outputs, labels)."""
    import keras

    run = traced_call(model, image_size)
    bar = keras.utils.Progbar(total, unit_name="image")
    print(label)
    outputs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for images, batch_labels in _as_numpy_batches(dataset):
        outputs.append(np.asarray(run(images)))
        labels.append(batch_labels)
        bar.add(len(batch_labels))
    if not outputs:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int32)
    return np.concatenate(outputs), np.concatenate(labels)


def _as_numpy_batches(dataset: tf.data.Dataset) -> Iterable[tuple[Any, np.ndarray]]:
    for images, labels in dataset:
        yield images, np.asarray(labels)


def history_dict(history: Any) -> dict[str, list[float]]:
    """keras History -> plain JSON-able lists (learning rate included)."""
    return {key: [float(value) for value in values] for key, values in history.history.items()}
