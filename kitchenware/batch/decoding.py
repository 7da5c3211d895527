"""Decoding files for batch scoring through the one shared preprocessing path.

Functions here run in decoder threads, decoder processes or Ray tasks, so they are plain
module-level functions over plain values (picklable) and never raise for a bad file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kitchenware.runtime.preprocessing import DEFAULT_MAX_PIXELS, ImageDecodeError, preprocess_bytes

from .inputs import read_error


@dataclass(frozen=True)
class Decoded:
    """One file's model input (uint8, lossless for the resized 8-bit pixels), or why not."""

    array: np.ndarray | None
    reason: str = ""
    error: str = ""


def decode_bytes(
    data: bytes, image_size: int, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Decoded:
    try:
        array = preprocess_bytes(data, image_size, name=name, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return Decoded(None, exc.reason, str(exc))
    except MemoryError:
        return Decoded(None, "out_of_memory", f"{name} needs more memory than is free to decode.")
    # The resized pixels are whole numbers in [0, 255]: uint8 is exact and 4x smaller to move.
    return Decoded(array.astype(np.uint8))


def decode_file(
    path: str | Path, image_size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Decoded:
    path = Path(path)
    problem = read_error(path)
    if problem is not None:
        return Decoded(None, *problem)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Decoded(None, "unreadable", f"{path} cannot be read: {exc.strerror or exc}.")
    return decode_bytes(data, image_size, str(path), max_pixels)


def decode_files(
    paths: list[str], image_size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> list[Decoded]:
    """A slice of files in one call: one pickling round trip per slice in a process pool."""
    return [decode_file(path, image_size, max_pixels) for path in paths]
