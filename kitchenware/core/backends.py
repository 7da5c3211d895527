"""Inference backends behind one interface: float32 RGB batches in [0, 255] -> probabilities.

The service, the benchmarks and batch scoring all load a model through `load_backend`, so
they run the same code whichever runtime answers. `tensorflow` is the Keras model through
one traced tf.function (`kitchenware.core.inference.Classifier`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from kitchenware.core.metadata import ModelMetadata

AUTO = "auto"
TENSORFLOW = "tensorflow"
BACKEND_NAMES = (TENSORFLOW,)


class Backend(Protocol):
    """A loaded model that turns a batch of images into class probabilities."""

    name: str
    metadata: ModelMetadata

    @property
    def class_names(self) -> list[str]: ...

    @property
    def image_size(self) -> int: ...

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) float32 in [0, 255] -> (n, classes) float32 probabilities."""
        ...

    def warm_up(self) -> None: ...

    def runtime_info(self) -> dict[str, str]:
        """What answers: backend name, precision, threads/streams (logged and in /metrics)."""
        ...


class BackendError(ValueError):
    """A backend that is unknown, missing from the model directory or failed its gate."""


def load_backend(model_dir: Path | str, name: str = AUTO) -> Backend:
    """Load the model in `model_dir` with backend `name` (`auto`: the fastest gated one)."""
    if name not in (AUTO, *BACKEND_NAMES):
        raise BackendError(
            f"Unknown backend {name!r}: choose one of {', '.join((AUTO, *BACKEND_NAMES))}."
        )
    from kitchenware.core.inference import Classifier

    return Classifier.load(model_dir)
