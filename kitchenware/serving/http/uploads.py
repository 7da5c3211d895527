"""The upload gate: an ASGI middleware that checks uploads as they stream to BentoML.

BentoML 1.4 has no request size limit, answers 500 for a malformed multipart body,
silently keeps only the first of two files in a single-file field, and downloads a URL
given as a text value in a file field. This gate enforces the service contract on the
same pass that feeds BentoML (no spool, no replay): each chunk is parsed as it arrives
and handed on at once, every file part renamed to `upload` on the way (BentoML writes
each file to a temp file whose suffix is the client's file name: a 300-character name
answered 500), with the client names kept in the scope for messages and responses.

- bytes: over the limit while streaming, 413 (a declared Content-Length before any read);
- shape: a non-multipart body, a missing, misnamed, duplicated or non-file field, a text
  field that is not text: 400 naming the field; too many files: 413. The part list is
  complete with the closing boundary, so the last chunk is handed on only once it passed;
- pace: a body arriving slower than the minimum rate, after a grace period, is cut off
  with a 408 (slow clients must not hold connections and memory forever).

On a refusal the app, which never saw the whole body, is stopped where it waits for the
next chunk (errors.BodyWatch) and the gate answers. /feedback also takes JSON and
url-encoded forms (a correction by request id has no file): those get the byte and pace
checks only, and BentoML validates their fields.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kitchenware.serving.http.errors import BodyWatch, ClientError, error_answer, error_body

UPLOAD_NAMES_SCOPE_KEY = "kitchenware.upload_filenames"  # client filenames, for error messages
FORM_TYPES = (b"application/json", b"application/x-www-form-urlencoded")


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
    # JSON and url-encoded bodies are welcome too (/feedback: BentoML's client sends a form).
    accepts_forms: bool = False


@dataclass(frozen=True)
class UploadPace:
    """The slowest body accepted: `min_bytes_per_s` on average once `grace_s` has passed."""

    min_bytes_per_s: int
    grace_s: float

    def deadline(self, started: float, received: int) -> float:
        """When the next bytes must have arrived for the average to stay above the minimum."""
        return started + max(self.grace_s, received / self.min_bytes_per_s)


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
    out: bytearray = field(default_factory=bytearray)
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
        self.out.extend(b"\r\n")

    def _part_begin(self) -> None:
        self.parts.append(_Part())
        self.out.extend(b"--" + self.boundary + b"\r\n")

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
        self.out.extend(name + b": " + value + b"\r\n")
        self._header_field.clear()
        self._header_value.clear()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].size += end - start
        self.out.extend(data[start:end])

    def _end(self) -> None:
        self.out.extend(b"--" + self.boundary + b"--\r\n")
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


def check_content_type(headers: dict[bytes, bytes], rule: FileField) -> bytes | None:
    """The multipart boundary (None for a form the rule accepts), else UploadRejected."""
    raw = headers.get(b"content-type", b"")
    content_type, options = parse_options_header(raw)
    if rule.accepts_forms and content_type in FORM_TYPES:
        return None
    field_name = rule.name
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
    """ASGI middleware: enforce size, shape and pace of uploads on the given POST routes."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: dict[str, FileField],
        max_upload_bytes: int,
        pace: UploadPace | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.max_upload_bytes = max_upload_bytes
        self.pace = pace
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        method = scope.get("method")
        if rule is None or method == "OPTIONS":  # OPTIONS: leave CORS preflights to CORS
            await self.app(scope, receive, send)
            return
        if method != "POST":
            message = f"{scope['path']} takes POST with multipart/form-data, not {method}."
            refusal = error_body(message, "method_not_allowed")
            await error_answer(refusal, 405, {"Allow": "POST"})(scope, receive, send)
            return
        try:
            boundary = self._check_headers(scope, rule)
        except UploadRejected as rejected:
            await self._refusal(rejected)(scope, receive, send)
            return
        watch = BodyWatch(send)
        body = _CheckedBody(self, scope, rule, boundary, receive, watch)
        await watch.run(self.app, scope, body.receive)

    def _refusal(self, rejected: UploadRejected) -> Any:
        if self.on_reject is not None:
            self.on_reject(rejected.reason)
        close = {"Connection": "close"} if rejected.body_unread else None
        return error_answer(rejected.body(), rejected.status_code, close)

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

    def _too_slow(self, received: int, elapsed: float) -> UploadRejected:
        assert self.pace is not None
        return UploadRejected(
            408,
            "upload_too_slow",
            f"The request body arrived too slowly ({received:,} bytes in {elapsed:.0f} s, "
            f"under the minimum of {self.pace.min_bytes_per_s:,} bytes/s after the first "
            f"{self.pace.grace_s:g} s; KITCHENWARE_MIN_UPLOAD_BYTES_PER_S): the upload was "
            "cut off. Retry on a faster connection.",
            limit=self.pace.min_bytes_per_s,
            body_unread=True,
        )

    def _check_headers(self, scope: Scope, rule: FileField) -> bytes | None:
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_upload_bytes:
            raise self._too_large(int(declared))  # refused before the body is read at all
        boundary = check_content_type(headers, rule)
        if boundary is not None:  # the renamed parts change the length: BentoML streams it
            scope["headers"] = [
                (k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"
            ]
        return boundary


class _CheckedBody:
    """The app's receive(): each chunk checked (and its file names replaced) on its way."""

    def __init__(
        self,
        gate: UploadGate,
        scope: Scope,
        rule: FileField,
        boundary: bytes | None,
        receive: Receive,
        watch: BodyWatch,
    ) -> None:
        self.gate, self.scope, self.rule, self.boundary = gate, scope, rule, boundary
        self._receive, self.watch = receive, watch
        self.collector = _PartCollector(boundary or b"")
        callbacks: Any = self.collector.callbacks()
        self.parser = MultipartParser(boundary, callbacks) if boundary is not None else None
        self.received = 0
        self.started = time.monotonic()
        self.done = False

    async def receive(self) -> Message:
        if self.done:  # after the body: the server's own messages (a disconnect)
            return await self._receive()
        try:
            message = await self._next_message()
            if message["type"] == "http.disconnect":
                self.watch.stop(None)  # the client is gone: nobody to answer
            chunk = message.get("body", b"")
            self.received += len(chunk)
            if self.received > self.gate.max_upload_bytes:
                raise self.gate._too_large(None)
            more = bool(message.get("more_body", False))
            if self.parser is not None:
                chunk = self._parsed(chunk, final=not more)
        except UploadRejected as rejected:
            self.watch.stop(self.gate._refusal(rejected))
        self.done = not more
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def _next_message(self) -> Message:
        pace = self.gate.pace
        if pace is None:
            return await self._receive()
        wait = pace.deadline(self.started, self.received) - time.monotonic()
        with anyio.move_on_after(max(wait, 0)):
            return await self._receive()
        raise self.gate._too_slow(self.received, time.monotonic() - self.started)

    def _parsed(self, chunk: bytes, *, final: bool) -> bytes:
        """The chunk as BentoML gets it (file names replaced); the checks once it is whole."""
        assert self.parser is not None and self.boundary is not None
        collector = self.collector
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise _malformed(exc, self.boundary, started=bool(collector.parts)) from exc
        if final:
            if not collector.finished:
                raise UploadRejected(
                    400,
                    "malformed_multipart",
                    "The multipart body ends before its closing boundary (truncated upload?).",
                )
            check_parts(collector.parts, self.rule)
            self.scope[UPLOAD_NAMES_SCOPE_KEY] = [p.filename for p in collector.parts]
        out = bytes(collector.out)
        collector.out.clear()
        return out


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
