"""Hypothesis against the decode path: hostile bytes end in a documented rejection, quickly.

Seeds are real photos (examples/, plus the published kitchenware photos when the
pretrained cache is there) re-encoded in every accepted format; Hypothesis truncates,
flips, splices and repeats their bytes, and forges headers that promise huge images in
tiny files. `preprocess_bytes` must either return a (size, size, 3) float32 array in
[0, 255] or raise an `ImageDecodeError` (400/413 in the service), within 2 s each.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kitchenware.runtime import preprocessing as pp

REPO = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 64
TIME_LIMIT_S = 2.0
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
FUZZ = settings(
    max_examples=150,
    deadline=None,  # timed explicitly below: the 2 s limit is the contract, not a flake guard
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same cases every run; failures reproduce
    database=None,
)
TRIED: dict[str, int] = {}  # strategy -> cases tried, printed in the summary test


@lru_cache(maxsize=1)
def seeds() -> tuple[bytes, ...]:
    """Real photos, each small enough to fuzz quickly, in every accepted format."""
    images = [Image.open(path).convert("RGB") for path in sorted((REPO / "examples").iterdir())]
    encoded = []
    for image in images:
        for fmt in FORMATS:
            buffer = io.BytesIO()
            picture = image.convert("P") if fmt == "GIF" else image
            picture.save(buffer, fmt)
            encoded.append(buffer.getvalue())
    return tuple(encoded)


def check(data: bytes, strategy: str) -> None:
    """The contract: an array or a documented rejection, within the time limit."""
    TRIED[strategy] = TRIED.get(strategy, 0) + 1
    started = time.perf_counter()
    try:
        array = pp.preprocess_bytes(data, IMAGE_SIZE)
    except pp.ImageDecodeError as exc:
        assert exc.status_code in (400, 413)
        assert str(exc).startswith("image ")  # the message names the upload
    else:
        assert array.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and array.dtype == np.float32
        assert np.isfinite(array).all() and 0 <= array.min() <= array.max() <= 255
    elapsed = time.perf_counter() - started
    assert elapsed < TIME_LIMIT_S, f"{len(data)} bytes took {elapsed:.2f} s"


seed_index = st.integers(min_value=0, max_value=len(seeds()) - 1)


@FUZZ
@given(seed=seed_index, cut=st.floats(0.0, 1.0))
def test_truncated_photos(seed: int, cut: float) -> None:
    data = seeds()[seed]
    check(data[: int(len(data) * cut)], "truncated")


@FUZZ
@given(
    seed=seed_index,
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), min_size=1, max_size=12),
)
def test_corrupted_photos(seed: int, flips: list[tuple[float, int]]) -> None:
    data = bytearray(seeds()[seed])
    for where, value in flips:
        # Most flips land in the header (first 2 KiB), where decoders make their decisions.
        position = int(where * min(len(data) - 1, 2048 if where < 0.7 else len(data) - 1))
        data[position] = value
    check(bytes(data), "corrupted")


@FUZZ
@given(
    seed=seed_index,
    other=seed_index,
    start=st.floats(0.0, 1.0),
    length=st.integers(0, 4096),
    repeat=st.integers(1, 50),
)
def test_spliced_and_repeated_photos(
    seed: int, other: int, start: float, length: int, repeat: int
) -> None:
    data, donor = seeds()[seed], seeds()[other]
    cut = int(len(data) * start)
    check(data[:cut] + donor[cut : cut + length] * repeat + data[cut:], "mutated")


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    check(data, "random")


MAGIC_NUMBERS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"RIFF"]


@FUZZ
@given(prefix=st.sampled_from(MAGIC_NUMBERS), rest=st.binary(max_size=2048))
def test_magic_numbers_with_garbage(prefix: bytes, rest: bytes) -> None:
    check(prefix + rest, "magic+garbage")


# --- huge dimensions in a tiny file ---------------------------------------------------------


def png_header_only(width: int, height: int, body: bytes = b"") -> bytes:
    """A PNG whose IHDR promises width x height, with a tiny (or no) IDAT."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def gif_header_only(width: int, height: int) -> bytes:
    screen = struct.pack("<HH", width, height) + b"\x80\x00\x00" + b"\x00" * 6
    image = b"," + struct.pack("<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00;"
    return b"GIF89a" + screen + image


def bmp_header_only(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 marker is rewritten to claim width x height."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def flat_image(fmt: str, width: int, height: int) -> bytes:
    """A genuinely huge but flat image: compresses to almost nothing."""
    buffer = io.BytesIO()
    options = {"compression": "tiff_deflate"} if fmt == "TIFF" else {}
    Image.new("P" if fmt == "GIF" else "RGB", (width, height)).save(buffer, fmt, **options)
    return buffer.getvalue()


side = st.integers(min_value=1, max_value=65535)
forged = st.sampled_from([png_header_only, gif_header_only, bmp_header_only, jpeg_with_size])


@settings(FUZZ, max_examples=120)
@given(make=forged, width=side, height=side)
def test_forged_headers_promising_huge_images(
    make: Callable[[int, int], bytes], width: int, height: int
) -> None:
    check(make(width, height), "forged-size")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "TIFF"])
def test_flat_images_near_the_pixel_limit_are_quick(fmt: str) -> None:
    """7,000 x 7,000 (49 M pixels, under the 50 M limit) in a few hundred KB: a bomb."""
    data = flat_image(fmt, 7000, 7000)
    assert len(data) < 1_000_000
    check(data, "flat-huge")


def test_forged_and_flat_images_are_413s_that_say_why() -> None:
    with pytest.raises(pp.TooManyPixelsError, match="too many pixels") as forged:
        pp.preprocess_bytes(png_header_only(60000, 60000), IMAGE_SIZE)
    with pytest.raises(pp.TooManyPixelsError, match=r"7000x7000.*decompression bomb") as flat:
        pp.preprocess_bytes(flat_image("WEBP", 7000, 7000), IMAGE_SIZE)
    assert forged.value.status_code == flat.value.status_code == 413


def test_summary_of_cases_tried() -> None:
    """Runs last in this module: how many cases each strategy tried (see -s output)."""
    print("decode fuzz cases:", dict(TRIED), "total", sum(TRIED.values()))
