"""Evaluation on the held-out split: the test run, metrics (numpy), JSON files and PNG plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kitchenware.runtime.files import write_json

if TYPE_CHECKING:
    from kitchenware.training.data import Split
    from kitchenware.training.models import BuiltModel

METRICS_FILENAME = "metrics.json"
HISTORY_FILENAME = "history.json"
CURVES_FILENAME = "training_curves.png"
CONFUSION_FILENAME = "confusion_matrix.png"


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, their macro averages, confusion matrix."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(probabilities).argmax(axis=-1)
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    per_class: dict[str, dict[str, float | int]] = {}
    for index, name in enumerate(class_names):
        true_positive = float(matrix[index, index])
        precision = _ratio(true_positive, float(matrix[:, index].sum()))
        recall = _ratio(true_positive, float(matrix[index, :].sum()))
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "support": int(matrix[index, :].sum()),
        }
    macro = {
        key: float(np.mean([scores[key] for scores in per_class.values()]))
        for key in ("precision", "recall", "f1")
    }
    return {
        "accuracy": _ratio(float(np.trace(matrix)), float(matrix.sum())),
        "num_examples": int(matrix.sum()),
        "macro": macro,
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }


def format_metrics(metrics: dict[str, Any]) -> str:
    """A small per-class table for the console."""
    lines = [f"{'class':<12} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for name, scores in metrics["per_class"].items():
        lines.append(
            f"{name:<12} {scores['precision']:>9.3f} {scores['recall']:>7.3f} "
            f"{scores['f1']:>6.3f} {scores['support']:>8d}"
        )
    macro = metrics["macro"]
    lines.append(
        f"{'macro':<12} {macro['precision']:>9.3f} {macro['recall']:>7.3f} {macro['f1']:>6.3f} "
        f"{metrics['num_examples']:>8d}"
    )
    lines.append(f"accuracy: {metrics['accuracy']:.4f}")
    return "\n".join(lines)


def plot_training_curves(phases: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss and accuracy per epoch over all phases, with a line where each phase starts.

    `phases` is a list of {"name": str, "history": {"loss": [...], "val_loss": [...], ...}}.
    """
    # A bare Figure renders to files without touching pyplot's global backend,
    # so a notebook that calls training keeps its inline plots.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        offset = 0
        for number, phase in enumerate(phases):
            history = phase["history"]
            epochs = len(history.get(metric, []))
            if epochs == 0:
                continue
            x = np.arange(offset + 1, offset + epochs + 1)
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                if key in history:
                    axis.plot(
                        x,
                        history[key],
                        style,
                        marker="o",
                        markersize=3,
                        color=f"C{number}",
                        label=f"{phase['name']} {key}",
                    )
            if number > 0:
                axis.axvline(offset + 0.5, color="grey", linestyle=":", linewidth=1)
                axis.annotate(
                    f"{phase['name']} starts",
                    (offset + 0.6, 0.97),
                    xycoords=("data", "axes fraction"),
                    fontsize=8,
                    color="grey",
                )
            offset += epochs
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Training curves (dashed: validation)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    return path


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: Path,
    title: str = "Confusion matrix (test split)",
) -> Path:
    from matplotlib.figure import Figure

    values = np.asarray(matrix)
    figure = Figure(figsize=(5.5, 5))
    axis = figure.subplots()
    axis.imshow(values, cmap="Blues")
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = values.max() / 2 if values.size else 0
    for row in range(values.shape[0]):
        for column in range(values.shape[1]):
            axis.text(
                column,
                row,
                str(values[row, column]),
                ha="center",
                va="center",
                color="white" if values[row, column] > threshold else "black",
            )
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    return path


def evaluate_model(
    built: BuiltModel,
    split: Split,
    class_names: Sequence[str],
    phases: list[dict[str, Any]],
    run_dir: Path,
    *,
    batch_size: int,
) -> dict[str, Any]:
    """Test-split metrics; writes metrics.json, history.json and the two PNGs to run_dir."""
    from kitchenware.training.fitting import predict_dataset
    from kitchenware.training.pipeline import make_dataset

    test_ds = make_dataset(
        split.test, class_names, built.image_size, batch_size=batch_size, shuffle=False, cache=False
    )
    probabilities, labels = predict_dataset(
        built.model,
        test_ds,
        built.image_size,
        label="Evaluating on the test split",
        total=len(split.test),
    )
    test = classification_metrics(labels, probabilities, class_names)
    print(format_metrics(test))
    best_val = max((max(p["history"].get("val_accuracy", [0.0])) for p in phases), default=0.0)
    metrics = {
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro"]["f1"],
        "best_val_accuracy": best_val,
        "split_sizes": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "epochs": {p["name"]: p["epochs"] for p in phases},
        "test": test,
    }
    write_json(metrics, run_dir / METRICS_FILENAME)
    write_json({"phases": phases}, run_dir / HISTORY_FILENAME)
    plot_training_curves(phases, run_dir / CURVES_FILENAME)
    plot_confusion_matrix(test["confusion_matrix"], class_names, run_dir / CONFUSION_FILENAME)
    return metrics
