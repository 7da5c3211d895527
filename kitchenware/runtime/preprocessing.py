"""The one path from image bytes to the model's input array.

Training (through tf.data), evaluation, batch scoring and the service all call
`preprocess_bytes`, so a model sees exactly the same pixels in training and in
production. Backbone-specific scaling lives inside the model, so the array here is
plain RGB in [0, 255].
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

# Recorded in each model's metadata; the service refuses a model whose name differs.
PREPROCESSING_NAME = "rgb-on-white/bilinear-stretch/float32-0-255/v1"

# Formats sniffed from the bytes; the client's Content-Type is never trusted.
# Pillow opens MPO (a phone camera's JPEG with extra frames) through its JPEG plugin.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
# File suffixes of those formats, for everything that finds images on disk (training data,
# batch scoring, feedback export); the decoder itself sniffs the bytes, never the suffix.
IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".mpo",
    ".png",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".gif",
)
Image.init()  # register every plugin now, so `formats=` can name MPO, WEBP and TIFF
DEFAULT_MAX_PIXELS = 50_000_000  # about 8200 x 6100; larger is treated as a decompression bomb
# A non-JPEG must be decoded in full (JPEG decodes at 1/8 scale via draft): past 16 M pixels
# in under 0.01 bytes a pixel (real photos need >= ~0.05) it is a flat or forged image whose
# decode alone took 1-2.4 s here. Found by tests/runtime/test_decode_fuzz.py.
BOMB_CHECK_PIXELS = 16_000_000
MIN_BYTES_PER_PIXEL = 0.01

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageDecodeError(ValueError):
    """An upload or file that cannot become a model input; `reason` is a metrics label."""

    reason = "invalid"
    status_code = 400


class EmptyImageError(ImageDecodeError):
    reason = "empty"


class NotAnImageError(ImageDecodeError):
    reason = "not_an_image"


class CorruptImageError(ImageDecodeError):
    reason = "corrupt"


class TooManyPixelsError(ImageDecodeError):
    reason = "too_many_pixels"
    status_code = 413


def open_image(data: bytes, *, name: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Open (header only) and check size; raises ImageDecodeError naming `name`."""
    if not data:
        raise EmptyImageError(f"{name} is empty (0 bytes).")
    with warnings.catch_warnings():
        # Our own pixel limit below replaces Pillow's bomb warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except Image.DecompressionBombError as exc:
            raise TooManyPixelsError(f"{name} has too many pixels: {exc}") from exc
        except Exception as exc:  # Pillow raises many types for unknown bytes
            raise NotAnImageError(
                f"{name} is not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})."
            ) from exc
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise TooManyPixelsError(
            f"{name} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} pixels."
        )
    if width < 1 or height < 1:
        raise CorruptImageError(f"{name} has an empty size {width}x{height}.")
    pixels = width * height
    if (
        image.format not in ("JPEG", "MPO")
        and pixels > BOMB_CHECK_PIXELS
        and len(data) < pixels * MIN_BYTES_PER_PIXEL
    ):
        raise TooManyPixelsError(
            f"{name} is {width}x{height} = {pixels:,} pixels in only {len(data):,} bytes, "
            "which looks like a decompression bomb; send a photo, or scale the image below "
            f"{BOMB_CHECK_PIXELS:,} pixels."
        )
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: alpha composited on white, 16-bit scaled down."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max()) if values.size else 0.0
        if mode == "F" and top <= 1.0:
            values = values * 255.0  # float images in [0, 1]
        elif top > 255.0:
            values = values / 257.0  # 16-bit range to 8-bit
        gray = Image.fromarray(np.clip(values, 0, 255).round().astype(np.uint8), mode="L")
        return gray.convert("RGB")
    return image.convert("RGB")


def decode_image(
    data: bytes,
    *,
    name: str = "image",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Bytes to an upright RGB image. `draft_size` lets JPEG decode at a reduced scale."""
    image = open_image(data, name=name, max_pixels=max_pixels)
    try:
        if draft_size is not None and image.format in ("JPEG", "MPO"):
            # Decode big JPEGs at 1/2, 1/4 or 1/8 scale, never below the target size.
            image.draft("RGB", (draft_size, draft_size))
        image.load()  # first frame of GIF/WebP/TIFF
        image = ImageOps.exif_transpose(image) or image
        return _to_rgb(image)
    except ImageDecodeError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptImageError(f"{name} is truncated or corrupt: {exc}.") from exc


def to_model_input(image: Image.Image, image_size: int) -> np.ndarray:
    """RGB image to a float32 (image_size, image_size, 3) array in [0, 255]."""
    resized = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def preprocess_bytes(
    data: bytes,
    image_size: int,
    *,
    name: str = "image",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Image bytes to the model's input array; the single shared preprocessing path."""
    image = decode_image(data, name=name, max_pixels=max_pixels, draft_size=image_size)
    return to_model_input(image, image_size)


def image_batch(batch: np.ndarray) -> np.ndarray:
    """A model's input as backends want it: C-contiguous float32 (n, size, size, 3)."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    return batch[None] if batch.ndim == 3 else batch
