"""Encoded test images: one helper for the colour-coded service tests and the training data."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def image_bytes(
    colour: tuple[int, ...] | None = (220, 30, 30),
    fmt: str = "PNG",
    size: tuple[int, int] = (40, 30),
    mode: str = "RGB",
    seed: int | None = None,
    **save_args: object,
) -> bytes:
    """An image encoded in `fmt`: one colour with a little noise, or random noise if colour is None.

    The colour-coded model of support/service.py labels by mean colour, so the noise stays small;
    random noise (alpha included) gives the training tests distinct, varied files per seed.
    """
    if colour is None:
        rng = np.random.default_rng(0 if seed is None else seed)
        noise = rng.integers(0, 256, size=(size[1], size[0], 4), dtype=np.uint8)
        image = Image.fromarray(noise, "RGBA")
    else:
        rng = np.random.default_rng(sum(colour) + size[0] if seed is None else seed)
        jitter = rng.integers(-10, 10, (size[1], size[0], 3))
        pixels = np.clip(np.array(colour[:3]) + jitter, 0, 255)
        image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if image.mode != mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()
