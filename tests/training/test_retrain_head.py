"""The warm-started head stays less sharp than a plain refit on the same few corrections
(issue 20: a head refit to ~70 corrections until a loss near 0 made its int8 artifact flip
decisive answers on photos nobody corrected, so the candidate was refused)."""

from __future__ import annotations

import numpy as np

from kitchenware.runtime.metadata import ModelMetadata
from kitchenware.training.retrain import build_parser
from kitchenware.training.retraining import RetrainOptions
from kitchenware.training.warmstart import WarmModel, fit_head


def _fitted_confidence(label_smoothing: float) -> float:
    """Mean probability a small real Keras head gives its own training examples' labels after
    the retrain's head fit (same epochs and patience as `make retrain`)."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    classes = ["cup", "fork", "glass"]
    labels = np.arange(24) % len(classes)
    # separable features, like the backbone's on corrected crops: a plain fit runs to ~1
    x = (rng.normal(size=(24, 16)) + 3 * np.eye(len(classes), 16)[labels]).astype(np.float32)
    y = np.eye(len(classes), dtype=np.float32)[labels]
    features = keras.Input((16,))
    head = keras.Model(features, keras.layers.Dense(len(classes), activation="softmax")(features))
    metadata = ModelMetadata(
        class_names=classes, image_size=32, preprocessing="xception", backbone="test"
    )
    warm = WarmModel(head, head, head, metadata, "0" * 64)
    defaults = RetrainOptions(model_tag="test:1")
    fit_head(
        warm,
        (x, y, np.ones(len(x), np.float32)),
        None,
        epochs=defaults.epochs,
        patience=defaults.patience,
        learning_rate=1e-2,
        batch_size=defaults.batch_size,
        seed=0,
        label_smoothing=label_smoothing,
    )
    return float(np.asarray(head(x))[np.arange(len(x)), labels].mean())


def test_the_retrain_smooths_labels_by_default_and_the_head_stays_less_sharp() -> None:
    default = build_parser().parse_args(["--model", "test:1"]).label_smoothing
    assert default > 0
    smoothed, plain = _fitted_confidence(default), _fitted_confidence(0.0)
    # Smoothed targets put 1 - s + s/K on the label: the head's confidence settles near it
    # instead of running to 1.
    assert smoothed < 1 - default + default / 3 + 0.02 < plain, (smoothed, plain)
