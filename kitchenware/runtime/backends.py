"""Inference backends behind one interface: float32 RGB batches in [0, 255] -> probabilities.

The service, the benchmarks and batch scoring all load a model through `load_backend`, so
they run the same code whichever runtime answers:

- `tensorflow`: the Keras model through one traced tf.function
  (runtime/tensorflow_backend.Classifier);
- `openvino-fp32`, `openvino-bf16`, `openvino-int8`: the OpenVINO IR made at import time
  (modelbuild/conversion), compiled for the CPU (runtime/openvino_backend); no TensorFlow import;
- `auto` (the default): the fastest artifact that passed the accuracy gate for this model,
  in the order int8, bf16, fp32 (measured here: 3.9x, 2.3-2.9x, 1.2-1.7x TensorFlow),
  falling back to the next one when an artifact is missing, failed its gate or does not
  load, and to TensorFlow last.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kitchenware.runtime.artifacts import (
    OPENVINO_BF16,
    OPENVINO_FP32,
    OPENVINO_INT8,
    read_manifest,
)
from kitchenware.runtime.metadata import MODEL_FILENAME, ModelMetadata

AUTO = "auto"
TENSORFLOW = "tensorflow"
OPENVINO_BACKENDS = (OPENVINO_FP32, OPENVINO_BF16, OPENVINO_INT8)
BACKEND_NAMES = (TENSORFLOW, *OPENVINO_BACKENDS)
AUTO_ORDER = (OPENVINO_INT8, OPENVINO_BF16, OPENVINO_FP32, TENSORFLOW)  # fastest first

logger = logging.getLogger("kitchenware.backends")


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


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def why_unusable(model_dir: Path, name: str) -> str | None:
    """None if backend `name` can serve the model in `model_dir`, else the reason why not."""
    if name == TENSORFLOW:
        if not (model_dir / MODEL_FILENAME).is_file():
            return f"{TENSORFLOW}: no {MODEL_FILENAME} in {model_dir}."
        if not installed("tensorflow"):
            return f"{TENSORFLOW}: TensorFlow is not installed in this image."
        return None
    if not installed("openvino"):
        return f"{name}: OpenVINO is not installed."
    manifest = read_manifest(model_dir)
    if manifest is None:
        return (
            f"OpenVINO: model in {model_dir} has no OpenVINO artifacts; they are made at "
            "import (`python build_bento_from_saved.py --import-only`)."
        )
    if name not in manifest.artifacts:
        return f"{name}: not among this model's artifacts ({', '.join(manifest.artifacts)})."
    gate = manifest.artifacts[name].gate
    return None if gate.passed else gate.reason


def load_backend(
    model_dir: Path | str, name: str = AUTO, *, allow_failed_gate: bool = False
) -> Backend:
    """Load the model in `model_dir` with backend `name` (`auto`: the fastest gated one).

    Every OpenVINO artifact is checked again on this CPU before it is returned (the import's
    gate rule on the model's reference slice, runtime/startup_check). An explicitly named
    backend that failed its gate or that check is refused (BackendError with the numbers)
    unless `allow_failed_gate` (for benchmarks); `auto` skips it and takes the next one.
    The returned backend's runtime_info() says what the check found and what was skipped.
    """
    model_dir = Path(model_dir)
    if name not in (AUTO, *BACKEND_NAMES):
        raise BackendError(
            f"Unknown backend {name!r}: choose one of {', '.join((AUTO, *BACKEND_NAMES))}."
        )
    if name != AUTO:
        reason = why_unusable(model_dir, name)
        if reason is not None and not (allow_failed_gate and "failed the accuracy gate" in reason):
            raise BackendError(f"Backend {reason}")
        if reason is not None:
            logger.warning("serving %s although %s", name, reason)
        backend, startup, failed = _load_and_check(model_dir, name)
        if failed is not None and not allow_failed_gate:
            raise BackendError(f"Backend {failed}")
        return CheckedBackend(backend, startup)
    skipped: list[str] = []
    fallen_from: list[str] = []
    for candidate in AUTO_ORDER:
        reason = why_unusable(model_dir, candidate)
        if reason is None:
            try:
                backend, startup, reason = _load_and_check(model_dir, candidate)
            except Exception as exc:  # a broken artifact must not stop the service
                reason = f"{candidate}: failed to load ({exc})."
            if reason is None:
                if skipped:
                    logger.info("backend auto chose %s; skipped: %s", candidate, " ".join(skipped))
                if fallen_from:
                    startup["fallback_from"] = ",".join(fallen_from)
                    startup["fallback_reason"] = " ".join(skipped)
                return CheckedBackend(backend, startup)
            logger.warning("backend auto: %s", reason)
            fallen_from.append(candidate)
        if reason not in skipped:  # "no artifacts" is one reason for all three
            skipped.append(reason)
    raise BackendError("No backend can serve this model: " + " ".join(skipped))


def _load_and_check(model_dir: Path, name: str) -> tuple[Backend, dict[str, str], str | None]:
    started = time.perf_counter()
    backend = _load(model_dir, name)
    loaded = time.perf_counter() - started
    startup, failed = _startup_check(model_dir, backend)
    return backend, {"load_seconds": f"{loaded:.2f}", **startup}, failed


def _startup_check(model_dir: Path, backend: Backend) -> tuple[dict[str, str], str | None]:
    """Run the gate rule on this CPU: (runtime-info entries, failure reason or None)."""
    from kitchenware.runtime.startup_check import read_reference_slice, run_check_once_per_server

    manifest = read_manifest(model_dir)
    if backend.name == TENSORFLOW or manifest is None or backend.name not in manifest.artifacts:
        return {"startup_check": "not run (the Keras fp32 model is the reference)"}, None
    reference = read_reference_slice(model_dir)
    if reference is None:
        return {"startup_check": "not run (no reference slice: re-import the model)"}, None
    rule = manifest.artifacts[backend.name].gate.rule
    checked = run_check_once_per_server(model_dir, backend, reference, rule)
    result, seconds = checked.result, checked.seconds
    outcome = "passed" if result.passed else "failed"
    by = "another worker of this server" if checked.shared else "this worker"
    logger.info("start-up check on this CPU, %.2f s (run by %s): %s", seconds, by, result.reason)
    startup = {
        "startup_check": f"{outcome} in {seconds:.2f} s on {result.images} images",
        "startup_check_numbers": result.reason,
    }
    if checked.shared:
        startup["startup_check"] += " (run by another worker of this server)"
    return startup, None if result.passed else result.reason


class CheckedBackend:
    """A loaded backend plus what the start-up check found and what `auto` skipped.

    Delegates everything to the backend it wraps (Grad-CAM reaches the Keras model through
    it); only runtime_info() adds the check's entries.
    """

    def __init__(self, backend: Backend, startup: dict[str, str]) -> None:
        self.backend = backend
        self.startup = startup
        self.name = backend.name
        self.metadata = backend.metadata

    @property
    def class_names(self) -> list[str]:
        return self.backend.class_names

    @property
    def image_size(self) -> int:
        return self.backend.image_size

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        return self.backend.predict_arrays(batch)

    def warm_up(self) -> None:
        started = time.perf_counter()
        self.backend.warm_up()
        self.startup["warm_up_seconds"] = f"{time.perf_counter() - started:.2f}"

    def runtime_info(self) -> dict[str, str]:
        return {**self.backend.runtime_info(), **self.startup}

    def __getattr__(self, attribute: str) -> Any:
        if attribute == "backend":  # not set yet (copy/pickle): no recursion
            raise AttributeError(attribute)
        return getattr(self.backend, attribute)


def _load(model_dir: Path, name: str) -> Backend:
    if name == TENSORFLOW:
        from kitchenware.runtime.tensorflow_backend import Classifier

        return Classifier.load(model_dir)
    from kitchenware.runtime.openvino_backend import OpenVinoClassifier

    return OpenVinoClassifier.load(model_dir, name)
