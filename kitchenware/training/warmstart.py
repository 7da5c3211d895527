"""Warm start from a served model: its own backbone as a frozen feature extractor, its own
head trained further on cached features.

The served model is loaded from the store as it is (same architecture, input size and
preprocessing) and cut after its global pooling layer; the layers after the cut are the
head. Training the head moves the weights of the loaded model itself, so saving that model
saves the candidate. Backbone features are cached on disk per (model file, photo sha256):
a second retrain of the same model re-reads them instead of running the backbone again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware.runtime.files import file_sha256
from kitchenware.runtime.metadata import MODEL_FILENAME, ModelMetadata, read_metadata
from kitchenware.runtime.tensorflow_backend import traced_call
from kitchenware.training.corrections import RetrainInputError
from kitchenware.training.fitting import history_dict

POOLING_LAYERS = ("GlobalAveragePooling2D", "GlobalMaxPooling2D")


@dataclass
class WarmModel:
    """A served model cut into backbone features and the head that reads them."""

    model: Any  # the whole Keras model; its head layers are the ones trained
    feature_extractor: Any
    head: Any
    metadata: ModelMetadata
    model_sha256: str

    @property
    def image_size(self) -> int:
        return self.metadata.image_size


def load_warm_model(model_dir: Path) -> WarmModel:
    """Load `model.keras` from a store entry and cut it after its last global pooling."""
    import keras

    metadata = read_metadata(model_dir)
    model = keras.models.load_model(model_dir / MODEL_FILENAME, compile=False)
    cut = [i for i, layer in enumerate(model.layers) if type(layer).__name__ in POOLING_LAYERS]
    if not cut:
        raise RetrainInputError(
            f"The model in {model_dir} has no global pooling layer to cut at: only models "
            "with a pooled backbone and a head on top can be retrained from corrections."
        )
    pool = model.layers[cut[-1]]
    feature_extractor = keras.Model(model.inputs, pool.output, name="served_features")
    features = keras.Input(tuple(pool.output.shape[1:]), name="features")
    x = features
    for layer in model.layers[cut[-1] + 1 :]:  # the head: a chain of layers after the pool
        x = layer(x)
    head = keras.Model(features, x, name="served_head")
    return WarmModel(
        model, feature_extractor, head, metadata, file_sha256(model_dir / MODEL_FILENAME)
    )


def check_cut(warm: WarmModel, images: np.ndarray) -> float:
    """The head on the features must give the served model's answers; returns the largest
    probability difference (raises when the cut changed the model)."""
    whole = np.asarray(traced_call(warm.model, warm.image_size)(images))
    parts = np.asarray(warm.head(warm.feature_extractor(images, training=False), training=False))
    diff = float(np.max(np.abs(whole - parts))) if len(images) else 0.0
    if diff > 1e-4:
        raise RetrainInputError(
            f"Cutting the served model after its pooling layer changes its answers (by up to "
            f"{diff:.3g}): its head is not a plain chain of layers, so it cannot be warm-started."
        )
    return diff


def cached_features(
    warm: WarmModel,
    paths: Sequence[Path],
    shas: Sequence[str],
    cache_dir: Path | None,
    *,
    label: str,
    batch_size: int = 32,
) -> tuple[np.ndarray, int]:
    """Backbone features of the photos at `paths` (content hashes `shas`), in order; and
    how many came from the cache."""
    import keras

    from kitchenware.training.pipeline import make_image_dataset

    if not paths:
        return np.zeros((0, warm.head.input_shape[-1]), np.float32), 0
    folder = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{warm.model_sha256}:{warm.image_size}".encode()).hexdigest()[:16]
        folder = Path(cache_dir) / key
        folder.mkdir(parents=True, exist_ok=True)
    found: dict[str, np.ndarray] = {}
    if folder is not None:
        for sha in shas:
            if sha not in found and (folder / f"{sha}.npy").is_file():
                found[sha] = np.load(folder / f"{sha}.npy")
    todo = [(path, sha) for path, sha in zip(paths, shas, strict=True) if sha not in found]
    if todo:
        print(f"{label}: {len(todo)} photo(s) through the backbone")
        run = traced_call(warm.feature_extractor, warm.image_size)
        bar = keras.utils.Progbar(len(todo), unit_name="image")
        batches = make_image_dataset([p for p, _ in todo], warm.image_size, batch_size=batch_size)
        position = 0
        for images in batches:
            outputs = np.asarray(run(images))
            for row in outputs:
                sha = todo[position][1]
                found[sha] = row
                if folder is not None:
                    np.save(folder / f"{sha}.npy", row)
                position += 1
            bar.add(len(outputs))
    return np.stack([found[sha] for sha in shas]).astype(np.float32), len(paths) - len(todo)


def head_probabilities(warm: WarmModel, features: np.ndarray) -> np.ndarray:
    if len(features) == 0:
        return np.zeros((0, warm.metadata.num_classes), np.float32)
    return np.asarray(warm.head.predict(features, batch_size=256, verbose=0))


@dataclass(frozen=True)
class HeadFit:
    epochs: int
    best_epoch: int
    history: dict[str, list[float]]


def fit_head(
    warm: WarmModel,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    *,
    epochs: int,
    patience: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    label_smoothing: float = 0.0,
) -> HeadFit:
    """Train the head on (features, target distributions, sample weights); early stopping
    on validation loss (training loss without a validation set) restores the best epoch.
    `label_smoothing` mixes every target with the uniform distribution: the loss is then
    lowest at finite logits, so the head cannot keep sharpening on a handful of examples."""
    import keras

    keras.utils.set_random_seed(seed)
    x, y, weights = train
    warm.head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    monitor = "val_loss" if val is not None else "loss"
    stop = keras.callbacks.EarlyStopping(
        monitor=monitor, patience=patience, restore_best_weights=True, verbose=0
    )
    history = warm.head.fit(
        x,
        y,
        sample_weight=weights,
        validation_data=val,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=[stop],
        verbose=0,  # hundreds of tiny epochs: one summary line instead
    )
    record = history_dict(history)
    losses = record.get(monitor, [0.0])
    fitted = HeadFit(len(losses), int(np.argmin(losses)) + 1, record)
    print(
        f"Head: {fitted.epochs} epochs on {len(x)} examples, best epoch {fitted.best_epoch} "
        f"({monitor} {min(losses):.4f}, "
        f"train accuracy {record['accuracy'][fitted.best_epoch - 1]:.3f})"
    )
    return fitted
