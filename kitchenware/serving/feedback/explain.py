"""Heatmaps of what the model looked at: Grad-CAM (TensorFlow) and occlusion (any backend).

- Grad-CAM needs gradients, so the Keras model: kitchenware.runtime.gradcam computes it
  (serving imports no TensorFlow itself); this module scales its map.
- Occlusion sensitivity needs only `Backend.predict_arrays`, so it works with OpenVINO
  (no gradients, no TensorFlow): one batched call over the photo and G x G copies of it,
  each with one cell painted grey; a cell's heat is how much the class's probability
  drops when it is hidden.

Both return a map in [0, 1] at the model's input size; `overlay_png` lays it over the photo
at the photo's own size. The model input is the whole photo stretched to a square, so the
map stretches back the same way.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from kitchenware.runtime.gradcam import GradCam, GradCamUnavailable

GRADCAM = "gradcam"
OCCLUSION = "occlusion"
AUTO = "auto"
METHODS = (GRADCAM, OCCLUSION)
OCCLUSION_FILL = 127.5  # mid grey in the model's [0, 255] input range
OVERLAY_ALPHA = 0.45


class ExplainError(ValueError):
    """An explanation that cannot be made as asked (bad class or method); a 400."""

    status_code = 400

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Explanation:
    heatmap: np.ndarray  # float32 (size, size) in [0, 1]
    class_index: int
    probabilities: np.ndarray  # of the unmasked photo
    method: str
    elapsed_ms: float


class ExplainResponse(BaseModel):
    """The heatmap answer: a PNG overlay at the photo's size and what it explains."""

    label: str = Field(description="The class the heatmap explains.")
    probability: float = Field(description="That class's probability for this photo.")
    predicted_label: str = Field(description="The class the model predicts for this photo.")
    method: str = Field(description="gradcam or occlusion.")
    width: int
    height: int
    overlay_png: str = Field(description="Base64 PNG: the heatmap over the photo.")
    heatmap_png: str = Field(description="Base64 PNG: the heatmap alone (grayscale).")
    model: str
    backend: str
    elapsed_ms: float = Field(description="Time spent computing the heatmap.")
    request_id: str | None = Field(None, description="Id of this request (X-Request-ID).")


def keras_model_of(backend: Any) -> Any | None:
    """The Keras model behind a backend, if it has one (the TensorFlow backend does)."""
    model = getattr(backend, "model", None)
    return model if model is not None and hasattr(model, "layers") else None


def choose_method(setting: str, backend: Any, requested: str | None = None) -> str:
    """The method to use: the request's, else the setting's, else per backend."""
    method = (requested or setting or AUTO).strip().lower()
    if method == AUTO:
        return GRADCAM if keras_model_of(backend) is not None else OCCLUSION
    if method not in METHODS:
        raise ExplainError(
            "unknown_method", f"Unknown method '{method}'; use one of: {', '.join(METHODS)}."
        )
    if method == GRADCAM and keras_model_of(backend) is None:
        raise ExplainError(
            "method_unavailable",
            f"gradcam needs gradients, which the {getattr(backend, 'name', '?')} backend does "
            "not have; use method=occlusion (or KITCHENWARE_BACKEND=tensorflow).",
        )
    return method


def class_index_of(label: str | None, class_names: list[str], probabilities: np.ndarray) -> int:
    if not label:
        return int(np.argmax(probabilities))
    if label not in class_names:
        raise ExplainError(
            "unknown_label",
            f"Got label '{label}'; it must be one of the model's classes: "
            f"{', '.join(class_names)}.",
        )
    return class_names.index(label)


def _normalised(heat: np.ndarray) -> np.ndarray:
    heat = np.maximum(np.asarray(heat, dtype=np.float32), 0.0)
    top = float(heat.max()) if heat.size else 0.0
    return heat / top if top > 0 else np.zeros_like(heat)


def _resize(heat: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)


# -- occlusion ----------------------------------------------------------------------------


def occlusion_batch(array: np.ndarray, grid: int) -> np.ndarray:
    """The photo then grid x grid copies, copy k with cell (k // grid, k % grid) grey."""
    size_y, size_x = array.shape[:2]
    edges_y = np.linspace(0, size_y, grid + 1).round().astype(int)
    edges_x = np.linspace(0, size_x, grid + 1).round().astype(int)
    batch = np.repeat(np.asarray(array, np.float32)[None], grid * grid + 1, axis=0)
    for row in range(grid):
        for col in range(grid):
            k = 1 + row * grid + col
            batch[k, edges_y[row] : edges_y[row + 1], edges_x[col] : edges_x[col + 1]] = (
                OCCLUSION_FILL
            )
    return batch


def occlusion_map(
    backend: Any, array: np.ndarray, label: str | None, grid: int
) -> tuple[np.ndarray, int, np.ndarray]:
    """(heat at input size, class index, probabilities) from one batched predict call."""
    outputs = np.asarray(backend.predict_arrays(occlusion_batch(array, grid)), np.float32)
    probabilities = outputs[0]
    index = class_index_of(label, list(backend.class_names), probabilities)
    drops = (probabilities[index] - outputs[1:, index]).reshape(grid, grid)
    size_y, size_x = array.shape[:2]
    # Each cell's value at its centre, interpolated in between (no blocky squares).
    cells = _normalised(drops)
    return _normalised(_resize(cells, size_x, size_y)), index, probabilities


# -- Grad-CAM (kitchenware.runtime.gradcam) -----------------------------------------------


_GRADCAMS: dict[int, GradCam] = {}


def gradcam_map(
    backend: Any, array: np.ndarray, label: str | None
) -> tuple[np.ndarray, int, np.ndarray]:
    model = keras_model_of(backend)
    if model is None:
        raise ExplainError("method_unavailable", "gradcam needs the tensorflow backend.")
    try:  # GradCam checks the model when made and on its first map
        if id(model) not in _GRADCAMS:
            _GRADCAMS[id(model)] = GradCam(model)
        probabilities = np.asarray(backend.predict_arrays(np.asarray(array, np.float32)[None]))[0]
        index = class_index_of(label, list(backend.class_names), probabilities)
        cam = _GRADCAMS[id(model)](array, index)
    except GradCamUnavailable as exc:
        raise ExplainError("method_unavailable", str(exc)) from exc
    size_y, size_x = array.shape[:2]
    return _normalised(_resize(_normalised(cam), size_x, size_y)), index, probabilities


def explain_array(
    backend: Any, array: np.ndarray, *, method: str, label: str | None = None, grid: int = 7
) -> Explanation:
    """Heatmap for one (size, size, 3) image in [0, 255] with `method` (see choose_method)."""
    started = time.perf_counter()
    if method == GRADCAM:
        heat, index, probabilities = gradcam_map(backend, array, label)
    elif method == OCCLUSION:
        heat, index, probabilities = occlusion_map(backend, array, label, grid)
    else:
        raise ExplainError("unknown_method", f"Unknown method '{method}'.")
    elapsed = (time.perf_counter() - started) * 1000
    return Explanation(heat.astype(np.float32), index, probabilities, method, elapsed)


# -- pictures -----------------------------------------------------------------------------


def colormap(heat: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 RGB, blue (cold) through green and yellow to red (hot)."""
    h = np.clip(heat, 0.0, 1.0)[..., None]
    stops = np.array([0.0, 0.35, 0.65, 1.0], np.float32)
    colours = np.array([[0, 0, 160], [0, 200, 120], [250, 220, 0], [230, 20, 20]], np.float32)
    rgb = np.stack([np.interp(h[..., 0], stops, colours[:, c]) for c in range(3)], axis=-1)
    return rgb.round().astype(np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def heatmap_image(heat: np.ndarray, width: int, height: int) -> Image.Image:
    """The map alone, grayscale, stretched to the photo's size."""
    values = _resize(heat, width, height)
    return Image.fromarray((np.clip(values, 0, 1) * 255).round().astype(np.uint8), mode="L")


def overlay_image(photo: Image.Image, heat: np.ndarray) -> Image.Image:
    """The map over the photo at the photo's size; cold areas stay nearly untouched."""
    width, height = photo.size
    values = np.clip(_resize(heat, width, height), 0, 1)
    base = np.asarray(photo.convert("RGB"), np.float32)
    alpha = (OVERLAY_ALPHA * (0.25 + 0.75 * values))[..., None]
    blended = base * (1 - alpha) + colormap(values).astype(np.float32) * alpha
    return Image.fromarray(blended.round().astype(np.uint8), mode="RGB")
