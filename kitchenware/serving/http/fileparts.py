"""A file field of an endpoint, kept in memory: what /classify and /classify_batch take.

BentoML's `Path` input writes every file part to a temp file that the endpoint then reads
back: a `mkstemp`, a write and a read on the event loop per photo, about a tenth of the
event loop's busy samples at c=16 (bench/RESULTS.md section 3). `UploadedFile` takes the
part as Starlette parsed it (in memory up to 1 MiB, past that Starlette's own spool file)
and keeps its bytes. To BentoML, its client and /schema.json it is the same file field as
`Path`: BentoML 1.4 recognises a file field by its type being a `PurePath` (or a PIL image),
so this is a `PurePosixPath` (the part's file name) with the bytes beside it, and its
schema is the one BentoML gives `Path`.
"""

from __future__ import annotations

from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import PydanticCustomError, core_schema
from starlette.datastructures import UploadFile


class UploadedFile(PurePosixPath):
    """One uploaded file: `name` as BentoML saw it, `data` its bytes."""

    data: bytes

    @classmethod
    def of(cls, data: bytes, filename: str | None) -> UploadedFile:
        part = cls(filename or "upload")
        part.data = data
        return part

    @classmethod
    def from_input(cls, value: Any) -> UploadedFile:
        """What BentoML's multipart parse hands a file field (or a local call passes)."""
        if isinstance(value, UploadedFile):
            return value
        if isinstance(value, UploadFile):
            return cls.of(value.file.read(), value.filename)
        if isinstance(value, bytes):
            return cls.of(value, None)
        if isinstance(value, PurePath):  # a local call with a file on disk
            return cls.of(Path(value).read_bytes(), value.name)
        raise PydanticCustomError("path_type", "Invalid file type")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls.from_input,
            core_schema.any_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda f: f.data),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        value = handler(schema)
        # BentoML's own file schema (what `Path` gets), so its client sends multipart.
        kind = "file" if handler.mode == "validation" else "string"
        value.update({"type": kind, "format": "binary"})
        return value
