"""Evaluation numbers a reader checks by hand, and the files a run directory gets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kitchenware.training import evaluation


def _one_hot(predicted: list[int], classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[predicted]


def test_metrics_match_a_hand_computed_example() -> None:
    # true:      a a a b b c
    # predicted: a a b b c c
    true, predicted = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    metrics = evaluation.classification_metrics(true, _one_hot(predicted, 3), ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = (metrics["per_class"][name] for name in "abc")
    assert (a["precision"], a["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"]) == (0.5, 1.0)
    assert c["f1"] == pytest.approx(2 / 3) and a["support"] == 3
    assert metrics["macro"]["recall"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    metrics = evaluation.classification_metrics([0, 1], _one_hot([0, 0], 2), ["a", "b"])
    assert metrics["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    json.dumps(metrics, allow_nan=False)  # metrics.json must stay strict JSON


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    phases = [
        {
            "name": "head",
            "history": {
                "loss": [1.0, 0.5],
                "val_loss": [1.1, 0.7],
                "accuracy": [0.4, 0.8],
                "val_accuracy": [0.3, 0.7],
            },
        },
        {
            "name": "fine-tune",
            "history": {
                "loss": [0.4],
                "val_loss": [0.6],
                "accuracy": [0.9],
                "val_accuracy": [0.75],
            },
        },
    ]
    curves = evaluation.plot_training_curves(phases, tmp_path / "curves.png")
    matrix = evaluation.plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png")
    for path in (curves, matrix):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
