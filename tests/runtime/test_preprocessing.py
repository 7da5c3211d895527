"""The shared preprocessing: every accepted format and mode becomes the same kind of array."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from kitchenware.runtime import preprocessing as pp


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
        ("PNG", "RGBA"),
        ("PNG", "LA"),
        ("PNG", "P"),
        ("PNG", "I;16"),
        ("WEBP", "RGB"),
        ("BMP", "RGB"),
        ("BMP", "1"),
        ("TIFF", "RGB"),
        ("TIFF", "I;16"),
        ("GIF", "P"),
    ],
)
def test_every_format_and_mode_becomes_rgb_array(fmt: str, mode: str) -> None:
    data = encode(Image.new(mode, (50, 40)), fmt)
    array = pp.preprocess_bytes(data, 32)
    assert array.shape == (32, 32, 3)
    assert array.dtype == np.float32
    assert 0.0 <= array.min() <= array.max() <= 255.0


def test_transparent_pixels_become_white() -> None:
    data = encode(Image.new("RGBA", (20, 20), (255, 0, 0, 0)), "PNG")
    assert np.all(pp.preprocess_bytes(data, 8) == 255.0)


def test_sixteen_bit_gray_keeps_its_brightness() -> None:
    gray16 = Image.fromarray(np.full((10, 10), 32896, dtype=np.uint16))  # mid-gray in 16 bits
    value = pp.preprocess_bytes(encode(gray16, "PNG"), 4)[0, 0, 0]
    assert 125 <= value <= 131


def test_exif_orientation_is_applied() -> None:
    # A 40x20 landscape image whose EXIF says "rotate 90": upright it is portrait,
    # with the red left half ending up on top.
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to view
    decoded = pp.decode_image(encode(image, "JPEG", exif=exif, quality=95))
    assert decoded.size == (20, 40)
    top, bottom = np.asarray(decoded)[5, 10], np.asarray(decoded)[35, 10]
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_gif_first_frame_is_used() -> None:
    frames = [Image.new("P", (10, 10), 1), Image.new("P", (10, 10), 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert tuple(pp.preprocess_bytes(buffer.getvalue(), 4)[0, 0]) == (255.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", pp.EmptyImageError),
        (b"just some text", pp.NotAnImageError),
        (b"<html><body>hi</body></html>", pp.NotAnImageError),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', pp.NotAnImageError),
    ],
)
def test_non_images_are_rejected_with_a_reason(data: bytes, error: type) -> None:
    with pytest.raises(error) as info:
        pp.preprocess_bytes(data, 32, name="upload.jpg")
    assert "upload.jpg" in str(info.value)


def test_truncated_jpeg_is_corrupt() -> None:
    data = encode(Image.effect_noise((200, 200), 50).convert("RGB"), "JPEG")
    with pytest.raises(pp.CorruptImageError, match="truncated or corrupt"):
        pp.preprocess_bytes(data[: len(data) // 2], 32)


def test_pixel_limit_is_checked_from_the_header() -> None:
    data = encode(Image.new("RGB", (300, 200)), "PNG")
    with pytest.raises(pp.TooManyPixelsError) as info:
        pp.preprocess_bytes(data, 32, max_pixels=10_000)
    assert info.value.status_code == 413
    assert "60,000 pixels" in str(info.value)


def test_same_bytes_give_the_same_array() -> None:
    data = encode(Image.effect_noise((300, 200), 40).convert("RGB"), "JPEG")
    assert np.array_equal(pp.preprocess_bytes(data, 64), pp.preprocess_bytes(data, 64))
