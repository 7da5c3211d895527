"""Every kind of upload the service contract names, valid and invalid, with the answer due.

Limits assumed by the cases (the served test sets them): see CATALOGUE_LIMITS.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from support.images import image_bytes
from support.service import SHARED_SERVER_SETTINGS

RED = (220, 30, 30)
CATALOGUE_LIMITS = {key: int(value) for key, value in SHARED_SERVER_SETTINGS.items()}


@dataclass(kw_only=True)
class Case:
    """One request: `request` returns keyword arguments for httpx.post(url + route, ...).

    Keyword-only: positional arguments once put every refusal's `mentions` into `label`.
    """

    id: str
    request: Callable[[], dict[str, Any]]
    status: int
    reason: str | None = None  # the error body's "reason" (None for a 200)
    label: str | None = None  # expected label for a 200
    mentions: list[str] = field(default_factory=list)  # words the error sentence must contain
    route: str = "/classify"


def _file(data: bytes, name: str = "photo", content_type: str = "image/png") -> dict[str, Any]:
    return {"files": {"image": (name, data, content_type)}}


def _encode(image: Image.Image, fmt: str, **args: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **args)
    return buffer.getvalue()


def _red(mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.open(io.BytesIO(image_bytes(RED, size=size))).convert(mode)


def _animated_gif() -> bytes:
    frames = [_red(), Image.new("RGB", (40, 30), (20, 200, 20))]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return _encode(_red(size=(60, 30)), "JPEG", exif=exif.tobytes())


def _p_with_transparency() -> bytes:
    image = _red().quantize(8)
    return _encode(image, "PNG", transparency=0)


def _sixteen_bit_png() -> bytes:
    values = (np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16)
    return _encode(Image.fromarray(values), "PNG")  # mode I;16


def _semi_transparent(mode: str) -> bytes:
    image = _red("RGBA")
    image.putalpha(160)
    return _encode(image.convert(mode), "PNG")


def _corrupt_png() -> bytes:
    data = bytearray(image_bytes(RED, size=(64, 64)))
    start = data.index(b"IDAT") + 8
    data[start : start + 40] = secrets.token_bytes(40)  # scramble the compressed pixels
    return bytes(data)


def multipart_body(
    parts: list[tuple[str, str | None, bytes]], boundary: str = "catalogueboundary"
) -> bytes:
    """A multipart/form-data body: (field name, filename or None for a text value, bytes)."""
    chunks = []
    for name, filename, payload in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + payload
            + b"\r\n"
        )
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def _chunked_over_limit(limit: int) -> dict[str, Any]:
    boundary = "catalogueboundary"
    body = multipart_body([("image", "big.bin", b"\0" * (limit + 1000))], boundary)

    def stream() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]

    return {
        "content": stream(),
        "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    }


def _over_pixel_limit(limit: int) -> bytes:
    side = int(limit**0.5) + 200
    return _encode(Image.new("1", (side, side), 1), "PNG")  # a few kB that decode to > limit


def catalogue(limits: dict[str, int] = CATALOGUE_LIMITS) -> list[Case]:
    png = image_bytes(RED)
    jpeg = image_bytes(RED, "JPEG", size=(200, 150))
    batch_limit = limits["max_batch_files"]
    byte_limit = f"limit of {limits['max_upload_bytes']:,} bytes"
    return [
        # accepted: every format, mode and mislabelled content type
        Case(
            id="jpeg", request=lambda: _file(jpeg, "a.jpg", "image/jpeg"), status=200, label="cup"
        ),
        Case(id="png", request=lambda: _file(png, "a.png"), status=200, label="cup"),
        Case(
            id="webp",
            request=lambda: _file(image_bytes(RED, "WEBP"), "a.webp", "image/webp"),
            status=200,
            label="cup",
        ),
        Case(
            id="bmp",
            request=lambda: _file(image_bytes(RED, "BMP"), "a.bmp", "image/bmp"),
            status=200,
            label="cup",
        ),
        Case(
            id="tiff",
            request=lambda: _file(image_bytes(RED, "TIFF"), "a.tiff", "image/tiff"),
            status=200,
            label="cup",
        ),
        Case(
            id="gif-animated-first-frame",
            request=lambda: _file(_animated_gif(), "a.gif", "image/gif"),
            status=200,
            label="cup",
        ),
        Case(
            id="jpeg-exif-rotated",
            request=lambda: _file(_exif_rotated_jpeg(), "r.jpg", "image/jpeg"),
            status=200,
            label="cup",
        ),
        Case(id="rgba", request=lambda: _file(_semi_transparent("RGBA"), "rgba.png"), status=200),
        Case(id="la", request=lambda: _file(_semi_transparent("LA"), "la.png"), status=200),
        Case(
            id="palette-transparency",
            request=lambda: _file(_p_with_transparency(), "p.png"),
            status=200,
        ),
        Case(
            id="grayscale", request=lambda: _file(_encode(_red("L"), "PNG"), "gray.png"), status=200
        ),
        Case(
            id="cmyk-jpeg",
            request=lambda: _file(_encode(_red("CMYK"), "JPEG"), "cmyk.jpg", "image/jpeg"),
            status=200,
            label="cup",
        ),
        Case(id="16-bit-png", request=lambda: _file(_sixteen_bit_png(), "deep.png"), status=200),
        Case(
            id="content-type-image-jpg",
            request=lambda: _file(jpeg, "a.jpg", "image/jpg"),
            status=200,
            label="cup",
        ),
        Case(
            id="content-type-octet-stream",
            request=lambda: _file(png, "a.bin", "application/octet-stream"),
            status=200,
            label="cup",
        ),
        Case(
            id="png-labelled-jpeg",
            request=lambda: _file(png, "a.jpg", "image/jpeg"),
            status=200,
            label="cup",
        ),
        # refused: unreadable images
        Case(
            id="empty-file",
            request=lambda: _file(b"", "empty.jpg", "image/jpeg"),
            status=400,
            reason="empty",
            mentions=["empty.jpg", "empty", "0 bytes"],
        ),
        Case(
            id="text",
            request=lambda: _file(b"just some words\n", "notes.txt", "text/plain"),
            status=400,
            reason="not_an_image",
            mentions=["notes.txt", "supported format", "JPEG"],
        ),
        Case(
            id="html",
            request=lambda: _file(
                b"<!doctype html><html><body>hi</body></html>", "p.html", "text/html"
            ),
            status=400,
            reason="not_an_image",
            mentions=["p.html"],
        ),
        Case(
            id="svg",
            request=lambda: _file(
                b'<svg xmlns="http://www.w3.org/2000/svg" width="9" '
                b'height="9"><rect width="9" height="9"/></svg>',
                "i.svg",
                "image/svg+xml",
            ),
            status=400,
            reason="not_an_image",
            mentions=["i.svg"],
        ),
        Case(
            id="truncated-jpeg",
            request=lambda: _file(jpeg[: len(jpeg) // 2], "half.jpg", "image/jpeg"),
            status=400,
            reason="corrupt",
            mentions=["half.jpg"],
        ),
        Case(
            id="corrupt-png",
            request=lambda: _file(_corrupt_png(), "bad.png"),
            status=400,
            reason="corrupt",
            mentions=["bad.png"],
        ),
        # refused: the wrong request shape
        Case(
            id="missing-field",
            request=lambda: {"files": {"note": (None, b"hello")}},
            status=400,
            reason="missing_field",
            mentions=["'image'", "'note'"],
        ),
        Case(
            id="misnamed-field",
            request=lambda: {"files": {"file": ("a.png", png, "image/png")}},
            status=400,
            reason="missing_field",
            mentions=["'image'", "'file'"],
        ),
        Case(
            id="two-files-in-image",
            request=lambda: {"files": [("image", ("a.png", png)), ("image", ("b.png", png))]},
            status=400,
            reason="too_many_files",
            mentions=["'image'", "/classify_batch"],
        ),
        Case(
            id="text-value-in-image",
            request=lambda: {"files": {"image": (None, b"http://x/cat.jpg")}},
            status=400,
            reason="not_a_file",
            mentions=["'image'"],
        ),
        Case(
            id="json-body",
            request=lambda: {"json": {"image": "cat.jpg"}},
            status=400,
            reason="not_multipart",
            mentions=["multipart/form-data", "application/json"],
        ),
        Case(
            id="no-body",
            request=lambda: {},
            status=400,
            reason="not_multipart",
            mentions=["multipart/form-data"],
        ),
        # refused: over a limit
        Case(
            id="over-byte-limit",
            request=lambda: _file(b"\0" * (limits["max_upload_bytes"] + 1), "big.png"),
            status=413,
            reason="too_large",
            mentions=[byte_limit, "KITCHENWARE_MAX_UPLOAD_BYTES"],
        ),
        Case(
            id="over-byte-limit-chunked",
            request=lambda: _chunked_over_limit(limits["max_upload_bytes"]),
            status=413,
            reason="too_large",
            mentions=[byte_limit, "KITCHENWARE_MAX_UPLOAD_BYTES"],
        ),
        Case(
            id="over-pixel-limit",
            request=lambda: _file(_over_pixel_limit(limits["max_image_pixels"]), "bomb.png"),
            status=413,
            reason="too_many_pixels",
            mentions=["bomb.png", f"limit of {limits['max_image_pixels']:,} pixels"],
        ),
        Case(
            id="too-many-files-in-batch",
            request=lambda: {
                "files": [("images", (f"{i}.png", png)) for i in range(batch_limit + 1)]
            },
            status=413,
            reason="too_many_files",
            mentions=["'images'", f"limit of {batch_limit}", "KITCHENWARE_MAX_BATCH_FILES"],
            route="/classify_batch",
        ),
        Case(
            id="batch-with-a-bad-image",
            request=lambda: {
                "files": [("images", ("ok.png", png)), ("images", ("bad.txt", b"no"))]
            },
            status=400,
            reason="not_an_image",
            mentions=["images[1]", "bad.txt"],
            route="/classify_batch",
        ),
    ]
