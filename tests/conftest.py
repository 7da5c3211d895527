"""Shared fixtures. The whole test session uses a throwaway BentoML home, never ~/bentoml."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.images import image_bytes

if TYPE_CHECKING:
    from kitchenware.modelbuild.pretrained import RealPhotos

# Set before anything imports bentoml: its store location is read at import time.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="kitchenware-test-bentoml-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# BentoML's /metrics reads Prometheus's multiprocess directory, which prometheus_client picks
# at its first import, whichever test module imports it first (tests/batch does, through
# kitchenware.serving); `bentoml serve` sets it for its workers, in-process tests need it here.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="kitchenware-prom-"))

ImageWriter = Callable[..., Path]


@pytest.fixture(scope="session")
def demo_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SYNTHETIC Kaggle-layout set (6 classes x 8 small images); treat it as read-only."""
    from kitchenware.training.demo.generator import generate_demo_dataset

    out = tmp_path_factory.mktemp("demo") / "kaggle"
    return generate_demo_dataset(out, per_class=8, seed=0, size_range=(64, 128), progress=False)


@pytest.fixture
def write_image() -> ImageWriter:
    """write_image(path, mode="RGB", size=(48, 40), fmt="JPEG", seed=0) -> path (random noise)."""

    def write(
        path: Path,
        mode: str = "RGB",
        size: tuple[int, int] = (48, 40),
        fmt: str = "JPEG",
        seed: int = 0,
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(None, fmt, size, mode, seed))
        return path

    return write


@pytest.fixture(scope="session")
def real_photos() -> RealPhotos:
    """The published package's 18 real Kaggle photos (9 labelled), from the cached wheel."""
    from kitchenware.modelbuild.pretrained import real_photos as cached_real_photos

    return cached_real_photos()
