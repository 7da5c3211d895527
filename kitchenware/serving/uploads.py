"""The upload gate: an ASGI middleware that checks uploads before BentoML parses them.

BentoML 1.4 has no request size limit, answers 500 for a malformed multipart body,
silently keeps only the first of two files in a single-file field, and downloads a URL
given as a text value in a file field. This gate enforces the service contract first:
a body over the byte limit is refused while streaming (413, never read whole), a
non-multipart body, a missing, misnamed, duplicated or non-file field gets a 400 that
names the field, too many files gets a 413. Accepted bodies are replayed with every
file part renamed to `upload`: BentoML writes each file to a temp file whose suffix is the
client's file name (a 300-character name answered 500), so no client-chosen name reaches
the filesystem; the original names stay in the scope for messages and responses.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kitchenware.serving.errors import ClientError

UPLOAD_NAMES_SCOPE_KEY = "kitchenware.upload_filenames"  # client filenames, for error messages
SPOOL_IN_MEMORY_BYTES = 1 << 20  # bodies above 1 MiB wait on disk, not in RAM
REPLAY_CHUNK_BYTES = 1 << 16


class UploadRejected(ClientError):
    """A request the gate refuses; `reason` is the metrics label."""

    def __init__(
        self,
        status_code: int,
        reason: str,
        message: str,
        *,
        body_unread: bool = False,
        **details: Any,
    ) -> None:
        super().__init__(status_code, reason, message, **details)
        self.body_unread = body_unread  # then the connection must close after the answer


@dataclass(frozen=True)
class FileField:
    """The one multipart field a route accepts and how many files it may hold."""

    name: str
    max_files: int
    limit_setting: str = ""  # env var named in the "too many files" message
    # Text fields the route also takes (/feedback's label, /explain's method), and whether
    # the file may be left out (/feedback by request_id).
    text_fields: tuple[str, ...] = ()
    optional: bool = False


@dataclass
class _Part:
    name: str | None = None
    filename: str | None = None
    content_type: bytes = b""  # as sent; a text field's must be text/plain or absent
    size: int = 0


@dataclass
class _PartCollector:
    """python-multipart callbacks that record each part's name, filename and size, and
    write the body again to `out` with the server's own file name in every file part."""

    boundary: bytes
    out: BinaryIO
    parts: list[_Part] = field(default_factory=list)
    finished: bool = False
    _header_field: bytearray = field(default_factory=bytearray)
    _header_value: bytearray = field(default_factory=bytearray)

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._line_end,
            "on_part_data": self._part_data,
            "on_part_end": self._line_end,
            "on_end": self._end,
        }

    def _line_end(self) -> None:
        self.out.write(b"\r\n")

    def _part_begin(self) -> None:
        self.parts.append(_Part())
        self.out.write(b"--" + self.boundary + b"\r\n")

    def _header_end(self) -> None:
        name, value = bytes(self._header_field), bytes(self._header_value)
        if name.lower() == b"content-disposition":
            _, options = parse_options_header(value)
            part = self.parts[-1]
            if b"name" in options:
                part.name = options[b"name"].decode("utf-8", "replace")
            if b"filename" in options:
                part.filename = options[b"filename"].decode("utf-8", "replace")
            value = _safe_disposition(options)
        elif name.lower() == b"content-type":
            self.parts[-1].content_type = parse_options_header(value)[0]
        self.out.write(name + b": " + value + b"\r\n")
        self._header_field.clear()
        self._header_value.clear()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].size += end - start
        self.out.write(data[start:end])

    def _end(self) -> None:
        self.out.write(b"--" + self.boundary + b"--\r\n")
        self.finished = True


SERVER_FILENAME = b"upload"  # the only file name BentoML ever sees


def _safe_disposition(options: dict[bytes, bytes]) -> bytes:
    """form-data with the part's name (escaped) and, for a file, the server's file name."""
    name = options.get(b"name", b"").replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    value = b'form-data; name="' + name + b'"'
    if b"filename" in options:
        value += b'; filename="' + SERVER_FILENAME + b'"'
    return value


def _limit_text(limit: int) -> str:
    return (
        f"{limit:,} bytes ({limit / (1 << 20):.0f} MiB)" if limit >= 1 << 20 else f"{limit:,} bytes"
    )


def check_content_type(headers: dict[bytes, bytes], field_name: str) -> bytes:
    """The multipart boundary, or UploadRejected for any other kind of body."""
    raw = headers.get(b"content-type", b"")
    content_type, options = parse_options_header(raw)
    hint = f"send multipart/form-data with the image in file field '{field_name}'"
    if content_type != b"multipart/form-data":
        got = content_type.decode("latin-1") or "none"
        raise UploadRejected(400, "not_multipart", f"The request body is {got}; {hint} (curl -F).")
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadRejected(
            400, "malformed_multipart", f"The multipart Content-Type has no boundary; {hint}."
        )
    return boundary


def _check_text_fields(parts: list[_Part], rule: FileField) -> None:
    """A route's text fields hold one text value each, never a file."""
    for name in rule.text_fields:
        found = [p for p in parts if p.name == name]
        # BentoML decodes a part labelled application/json as JSON, so `3` or `{}` would
        # reach the API as a number or an object: only plain text is a text value.
        not_text = [p for p in found if p.content_type not in (b"", b"text/plain")]
        if any(p.filename is not None for p in found) or len(found) > 1 or not_text:
            raise UploadRejected(
                400,
                "not_text",
                f"Multipart field '{name}' must be one text value (curl -F '{name}=...').",
                field=name,
            )


def _field_names(names: Iterable[str | None]) -> list[str]:
    """How messages list fields: 'name' each, sorted, and a part with no name as such."""
    unique = set(names)
    shown = [f"'{name}'" for name in sorted(n for n in unique if n is not None)]
    return shown + (["a part with no name (unnamed part)"] if None in unique else [])


def check_parts(parts: list[_Part], rule: FileField) -> None:
    """Exactly the route's field, only files, within the file count."""
    _check_text_fields(parts, rule)
    allowed = {rule.name, *rule.text_fields}
    others = _field_names(p.name for p in parts if p.name not in allowed)
    ours = [p for p in parts if p.name == rule.name]
    if not ours and rule.optional and not others:
        return
    if not ours:
        got = ", ".join(others) or "none"
        raise UploadRejected(
            400,
            "missing_field",
            f"No file in multipart field '{rule.name}' (fields sent: {got}).",
            field=rule.name,
        )
    if others:
        names = ", ".join(others)
        raise UploadRejected(
            400,
            "unexpected_field",
            f"Unexpected multipart field(s) {names}; send only file field '{rule.name}'.",
            field=rule.name,
        )
    texts = [p for p in ours if p.filename is None]
    if texts:
        raise UploadRejected(
            400,
            "not_a_file",
            f"Multipart field '{rule.name}' must be a file upload "
            f"(curl -F '{rule.name}=@photo.jpg'), not a text value.",
            field=rule.name,
        )
    if len(ours) > rule.max_files:
        if rule.max_files == 1:
            raise UploadRejected(
                400,
                "too_many_files",
                f"Multipart field '{rule.name}' holds {len(ours)} files; send exactly one "
                "(use /classify_batch for several).",
                field=rule.name,
            )
        limit = f" ({rule.limit_setting})" if rule.limit_setting else ""
        raise UploadRejected(
            413,
            "too_many_files",
            f"Multipart field '{rule.name}' holds {len(ours)} files, over the limit of "
            f"{rule.max_files} per request{limit}.",
            field=rule.name,
            limit=rule.max_files,
        )


class UploadGate:
    """ASGI middleware: enforce size and shape of uploads on the given POST routes."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: dict[str, FileField],
        max_upload_bytes: int,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.max_upload_bytes = max_upload_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        method = scope.get("method")
        if rule is None or method == "OPTIONS":  # OPTIONS: leave CORS preflights to CORS
            await self.app(scope, receive, send)
            return
        if method != "POST":
            message = f"{scope['path']} takes POST with multipart/form-data, not {method}."
            refusal = {"error": message, "reason": "method_not_allowed"}
            await JSONResponse(refusal, 405, {"Allow": "POST"})(scope, receive, send)
            return
        try:
            body = await self._read_checked(scope, receive, rule)
        except UploadRejected as rejected:
            if self.on_reject is not None:
                self.on_reject(rejected.reason)
            close = {"Connection": "close"} if rejected.body_unread else None
            answer = JSONResponse(rejected.body(), rejected.status_code, close)
            await answer(scope, receive, send)
            return
        except _ClientGone:
            return
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            body.close()

    def _too_large(self, size: int | None) -> UploadRejected:
        sent = f"{size:,} bytes" if size is not None else "more bytes"
        return UploadRejected(
            413,
            "too_large",
            f"The request body has {sent}, over the upload limit of "
            f"{_limit_text(self.max_upload_bytes)} (KITCHENWARE_MAX_UPLOAD_BYTES).",
            limit=self.max_upload_bytes,
            body_unread=True,
        )

    async def _read_checked(self, scope: Scope, receive: Receive, rule: FileField) -> BinaryIO:
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_upload_bytes:
            raise self._too_large(int(declared))  # refused before the body is read at all
        boundary = check_content_type(headers, rule.name)

        # Closed by the caller after the replay, or below on rejection.
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
        body = cast(BinaryIO, spool)
        collector = _PartCollector(boundary, body)
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        received = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > self.max_upload_bytes:
                    raise self._too_large(None)
                try:
                    parser.write(chunk)
                except MultipartParseError as exc:
                    raise _malformed(exc, boundary, started=bool(collector.parts)) from exc
                if not message.get("more_body", False):
                    break
            if not collector.finished:
                raise UploadRejected(
                    400,
                    "malformed_multipart",
                    "The multipart body ends before its closing boundary (truncated upload?).",
                )
            check_parts(collector.parts, rule)
            scope[UPLOAD_NAMES_SCOPE_KEY] = [p.filename for p in collector.parts]
        except BaseException:
            body.close()
            raise
        length = str(body.tell()).encode()
        scope["headers"] = [
            *((k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"),
            (b"content-length", length),
        ]
        body.seek(0)
        return body


def _malformed(exc: MultipartParseError, boundary: bytes, *, started: bool) -> UploadRejected:
    if not started:  # python-multipart fails on the first bytes when they are no delimiter
        shown = boundary.decode("latin-1")
        message = (
            f"The multipart body does not start with the boundary '{shown}' named in its "
            "Content-Type (was the body built for another boundary?)."
        )
    else:
        message = f"The multipart body is malformed: {exc}."
    return UploadRejected(400, "malformed_multipart", message)


class _ClientGone(Exception):
    """The client disconnected while sending its body."""


def _replay(body: BinaryIO, receive: Receive) -> Receive:
    """A receive() that yields the checked body again, then defers to the real one."""
    done = False

    async def replayed() -> Message:
        nonlocal done
        if done:
            return await receive()
        chunk = body.read(REPLAY_CHUNK_BYTES)
        more = len(chunk) == REPLAY_CHUNK_BYTES
        if not more:
            done = True
        return {"type": "http.request", "body": chunk, "more_body": more}

    return replayed
