"""Schemathesis hooks (SCHEMATHESIS_HOOKS=schemathesis_hooks, with tests/ on PYTHONPATH).

BentoML's /docs.json describes the file fields as `format: binary` without a content
type, so Schemathesis would only ever send random bytes, which the service rejects at
its first check. The schema hook below declares the file parts as `image/*`, and the
media-type strategy answers with real photos in every accepted format, damaged copies
of them, and random bytes, so fuzzing reaches the decoder and the model too.
tests/serving/test_fuzz_schema.py runs `st run` with these hooks.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")


@lru_cache(maxsize=1)
def photo_bytes() -> tuple[bytes, ...]:
    """The example photos as shipped, and re-encoded small in every accepted format."""
    shipped = [path.read_bytes() for path in sorted(EXAMPLES.iterdir())]
    encoded = []
    for index, data in enumerate(shipped):
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((96, 80))
        for fmt in FORMATS[index::2]:
            buffer = io.BytesIO()
            (image.convert("P") if fmt == "GIF" else image).save(buffer, fmt)
            encoded.append(buffer.getvalue())
    return (*shipped, *encoded)


@st.composite
def damaged_photo(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(photo_bytes()))
    cut = draw(st.integers(0, len(data)))
    return data[:cut]


IMAGE_STRATEGY = st.one_of(
    st.sampled_from(photo_bytes()),  # real photos: these must be answered 200
    damaged_photo(),  # truncated: a 400 that names the image
    st.binary(max_size=2048),  # random bytes: a 400 "not an image"
)
schemathesis.openapi.media_type("image/*", IMAGE_STRATEGY)


def _is_binary(schema: dict[str, Any]) -> bool:
    item = schema.get("items", schema) if schema.get("type") == "array" else schema
    return item.get("type") == "string" and item.get("format") == "binary"


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    """Declare every multipart binary field (single or repeated) as image/*."""
    for operations in raw_schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if not form:
                continue
            encoding = form.setdefault("encoding", {})
            properties = form.get("schema", {}).get("properties", {})
            for name, schema in properties.items():
                if _is_binary(schema):
                    encoding[name] = {"contentType": "image/*"}
                if schema.get("type") == "array" and _is_binary(schema):
                    # Schemathesis 4.32 sends a media-type value for an array field as one
                    # part without a filename (a text value, which the service must refuse);
                    # as a single file field it carries one: /classify_batch gets 1 image.
                    properties[name] = schema["items"]
