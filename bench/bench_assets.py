"""What every serving benchmark shares: the JPEG set, the Xception model dir, percentiles.

Kept free of TensorFlow imports at module level so the load-generating process stays light.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
IMAGES_DIR = OUT_DIR / "images"
MODEL_DIR = OUT_DIR / "model-xception-299"
BENCH_IMAGE_SIZE = 299
PHOTO_SIZE = (800, 600)  # a typical phone photo after the upload form's resize

if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` from a fresh clone without install
    sys.path.insert(0, str(REPO_ROOT))


def _photo_like_jpeg(rng: np.random.Generator, quality: int = 90) -> bytes:
    """A smooth gradient with a few filled shapes and mild noise: decodes like a photo."""
    width, height = PHOTO_SIZE
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    pixels = top * (1 - ramp) + bottom * ramp + rng.normal(0, 6, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, width - 100)), int(rng.integers(0, height - 100))
        box = (x0, y0, x0 + int(rng.integers(60, 300)), y0 + int(rng.integers(60, 300)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def ensure_jpeg_set(directory: Path = IMAGES_DIR, count: int = 32, seed: int = 0) -> list[Path]:
    """Write `count` deterministic JPEGs into `directory` once; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"bench-{index:03d}.jpg" for index in range(count)]
    if not all(path.is_file() for path in paths):
        rng = np.random.default_rng(seed)
        for path in paths:
            path.write_bytes(_photo_like_jpeg(rng))
    return paths


def load_jpeg_set(directory: Path = IMAGES_DIR, count: int = 32) -> list[bytes]:
    return [path.read_bytes() for path in ensure_jpeg_set(directory, count)]


def build_xception(image_size: int = BENCH_IMAGE_SIZE, classes: int = 6) -> Any:
    """Xception with random weights, the shape the trainer ships: [0, 255] in, softmax out."""
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="xception_scaling")(inputs)
    backbone = keras.applications.Xception(
        weights=None, include_top=False, input_shape=(image_size, image_size, 3)
    )
    features = keras.layers.GlobalAveragePooling2D()(backbone(scaled))
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(features)
    return keras.Model(inputs, outputs, name="bench_xception")


def ensure_model_dir(directory: Path = MODEL_DIR) -> Path:
    """Export the random-weight Xception (model.keras + metadata.json) once."""
    from kitchenware.core.metadata import (
        KITCHENWARE_CLASSES,
        MODEL_FILENAME,
        ModelMetadata,
        framework_versions,
    )
    from kitchenware.core.preprocessing import PREPROCESSING_NAME
    from kitchenware.core.store import export_model

    if (directory / MODEL_FILENAME).is_file():
        return directory
    import keras

    keras.utils.set_random_seed(0)
    metadata = ModelMetadata(
        class_names=list(KITCHENWARE_CLASSES),
        image_size=BENCH_IMAGE_SIZE,
        preprocessing=PREPROCESSING_NAME,
        backbone="xception",
        training_config={"weights": "random", "purpose": "serving benchmark only"},
        framework_versions=framework_versions(),
    )
    return export_model(build_xception(), metadata, directory)


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p99 and mean of a list of durations, in milliseconds."""
    if not seconds:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan")}
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(values.mean())}
