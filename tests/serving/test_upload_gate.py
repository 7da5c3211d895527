"""UploadGate driven as an ASGI app, no server: what reaches the service and what is refused.

The gate wraps a recording app; each test plays the ASGI messages a server would deliver
(body chunks, a disconnect) and reads back exactly what the gate sent. The last section
drives the batch decode-failure answer, a Starlette JSONResponse, the same way.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send
from support.images import image_bytes
from support.upload_catalogue import multipart_body

from kitchenware.serving.http.uploads import (
    UPLOAD_NAMES_SCOPE_KEY,
    FileField,
    UploadGate,
    UploadPace,
)
from kitchenware.serving.inference.decoding import (
    Upload,
    decode_failure_response,
    decode_one,
    stack_decoded,
)

BOUNDARY = "gateboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
HEADERS = [(b"host", b"testserver"), (b"content-type", MULTIPART.encode())]
LIMIT = 4 << 20
BATCH_LIMIT = 3
ROUTES = {
    "/classify": FileField("image", max_files=1),
    "/classify_batch": FileField(
        "images", max_files=BATCH_LIMIT, limit_setting="KITCHENWARE_MAX_BATCH_FILES"
    ),
    "/explain": FileField("image", max_files=1, text_fields=("label",)),
}
PNG = image_bytes((220, 30, 30))
JPEG = image_bytes((30, 30, 220), "JPEG", size=(90, 90))  # half of it still has a header


@dataclass
class Exchange:
    """One request through the gate: what the app behind it saw and what went back."""

    sent: list[Message] = field(default_factory=list)
    app_scope: Scope | None = None  # None: the gate answered without calling the app
    app_body: bytes = b""
    app_complete: bool = False  # the app got the whole body (a refused one never does)
    app_chunks_before_end: int = 0  # body chunks the app had while the client still sent
    rejections: list[str] = field(default_factory=list)
    chunks_read: int = 0  # how many body messages the gate (or app) took from the server

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


async def _recording_app(exchange: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body like BentoML would, then answers 200 {"ok": true}."""
    exchange.app_scope = scope
    if scope["type"] == "http" and scope["method"] == "POST":
        while True:
            message = await receive()
            exchange.app_body += message.get("body", b"")
            if not message.get("more_body", False):
                break
            exchange.app_chunks_before_end += 1
        exchange.app_complete = True
    await JSONResponse({"ok": True})(scope, receive, send)


def through_gate(
    body: bytes = b"",
    *,
    path: str = "/classify_batch",
    method: str = "POST",
    content_type: str | None = MULTIPART,
    declare_length: bool = True,
    chunk: int = 1000,
    disconnect_after: int | None = None,
    scope_type: str = "http",
    routes: dict[str, FileField] = ROUTES,
) -> Exchange:
    exchange = Exchange()
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    if disconnect_after is not None:
        pieces = pieces[:disconnect_after]

    def messages() -> Iterator[Message]:
        for index, piece in enumerate(pieces):
            more = disconnect_after is not None or index < len(pieces) - 1
            yield {"type": "http.request", "body": piece, "more_body": more}
        while True:  # then the client goes away, as a server reports it
            yield {"type": "http.disconnect"}

    feed = messages()

    async def receive() -> Message:
        message = next(feed)
        if message["type"] == "http.request":
            exchange.chunks_read += 1
        return message

    async def send(message: Message) -> None:
        exchange.sent.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _recording_app(exchange, scope, receive, send)

    headers = [(b"host", b"testserver")]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if declare_length:
        headers.append((b"content-length", str(len(body)).encode()))
    scope: Scope = {"type": scope_type, "path": path, "method": method, "headers": headers}
    if scope_type == "lifespan":
        scope = {"type": "lifespan"}
    gate = UploadGate(
        app, routes=routes, max_upload_bytes=LIMIT, on_reject=exchange.rejections.append
    )
    asyncio.run(gate(scope, receive, send))
    return exchange


def batch(
    *files: tuple[str, bytes], extra: tuple[tuple[str, str | None, bytes], ...] = ()
) -> bytes:
    """A /classify_batch body: each file in field `images`, then the `extra` parts."""
    return multipart_body([("images", name, data) for name, data in files] + list(extra), BOUNDARY)


def assert_refused(exchange: Exchange, status: int, reason: str, *words: str) -> dict[str, Any]:
    assert not exchange.app_complete, "a refused body must never reach the service whole"
    assert len(exchange.sent) == 2, "only the gate's answer goes back"
    assert exchange.status == status, exchange.json()
    assert exchange.headers["content-type"] == "application/json"
    body = exchange.json()
    assert body["reason"] == reason and exchange.rejections == [reason]
    for word in words:
        assert word in body["error"], (word, body["error"])
    assert body["error"].endswith((".", ")"))
    return dict(body)


# --- accepted: the body reaches the service unchanged ---


def parts_of(body: bytes) -> list[tuple[str, bytes]]:
    """(field name, payload) of each part of a body built with BOUNDARY."""
    delimiter = f"--{BOUNDARY}".encode()
    assert body.endswith(delimiter + b"--\r\n")
    parts = []
    for raw in body.split(delimiter)[1:-1]:
        head, _, payload = raw.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        assert name, head
        parts.append((name[1].decode(), payload.removesuffix(b"\r\n")))
    return parts


def test_an_accepted_batch_reaches_the_app_intact_with_the_client_filenames() -> None:
    body = batch(("a.png", PNG), ("b.jpg", JPEG))
    exchange = through_gate(body, chunk=777)
    assert exchange.status == 200 and exchange.json() == {"ok": True}
    assert parts_of(exchange.app_body) == [("images", PNG), ("images", JPEG)]
    assert exchange.app_scope is not None
    assert exchange.app_scope[UPLOAD_NAMES_SCOPE_KEY] == ["a.png", "b.jpg"]
    assert exchange.rejections == []


def test_a_large_body_streams_through_every_byte_without_waiting_for_its_end() -> None:
    payload = bytes(range(256)) * (3 * (1 << 20) // 256)  # 3 MiB
    body = batch(("big.bin", payload))
    chunk = (1 << 16) - 1
    exchange = through_gate(body, chunk=chunk, declare_length=False)
    assert exchange.status == 200
    assert parts_of(exchange.app_body) == [("images", payload)]
    # Passed on chunk by chunk as it arrives (no spool-and-replay): the app held all but
    # the last chunk before the gate read the last one.
    assert exchange.app_chunks_before_end == exchange.chunks_read - 1 > 40


# --- refused: malformed multipart ---


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (batch(("a.png", PNG)), "multipart/form-data", ["no boundary"]),
        (batch(("a.png", PNG))[:-40], MULTIPART, ["closing boundary"]),
        (
            f"--{BOUNDARY}\r\nthis is not a header\r\n\r\nxx\r\n--{BOUNDARY}--\r\n".encode(),
            MULTIPART,
            ["malformed"],
        ),
        pytest.param(
            multipart_body([("images", "a.png", PNG)], "someotherboundary"),
            MULTIPART,
            ["boundary", BOUNDARY],
        ),
    ],
    ids=["no-boundary", "truncated", "header-without-colon", "wrong-boundary"],
)
def test_malformed_multipart_is_a_400_that_says_what_is_wrong(
    body: bytes, content_type: str, words: list[str]
) -> None:
    exchange = through_gate(body, content_type=content_type)
    assert_refused(exchange, 400, "malformed_multipart", *words)


def test_a_non_multipart_body_is_refused_with_the_field_to_use() -> None:
    exchange = through_gate(b'{"image": "x"}', content_type="application/json")
    assert_refused(exchange, 400, "not_multipart", "application/json", "'images'")


# --- refused: the wrong fields ---


def test_an_unexpected_field_beside_the_images_is_named() -> None:
    body = batch(("a.png", PNG), extra=(("note", None, b"hello"), ("extra", "x.png", PNG)))
    body_json = assert_refused(
        through_gate(body), 400, "unexpected_field", "'extra'", "'note'", "'images'"
    )
    assert body_json["field"] == "images"


def test_a_part_without_a_name_is_called_unnamed() -> None:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: image/png\r\n\r\n".encode()
        + PNG
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    assert_refused(through_gate(body, path="/classify"), 400, "missing_field", "unnamed part")


def test_two_files_in_the_single_image_field_point_to_the_batch_route() -> None:
    body = multipart_body([("image", "a.png", PNG), ("image", "b.png", PNG)], BOUNDARY)
    assert_refused(through_gate(body, path="/classify"), 400, "too_many_files", "/classify_batch")


def test_too_many_files_in_a_batch_is_a_413_naming_the_limit_and_setting() -> None:
    body = batch(*[(f"{i}.png", PNG) for i in range(BATCH_LIMIT + 1)])
    refused = assert_refused(
        through_gate(body),
        413,
        "too_many_files",
        f"holds {BATCH_LIMIT + 1} files",
        f"limit of {BATCH_LIMIT}",
        "KITCHENWARE_MAX_BATCH_FILES",
    )
    assert refused["limit"] == BATCH_LIMIT


# --- refused: over the byte limit, without reading more than needed ---


def test_a_declared_length_over_the_limit_is_refused_before_reading_the_body() -> None:
    body = batch(("big.png", b"\0" * LIMIT))
    exchange = through_gate(body)
    assert_refused(exchange, 413, "too_large", f"{len(body):,} bytes", f"{LIMIT:,} bytes")
    assert exchange.chunks_read == 0
    assert exchange.headers["connection"] == "close"  # the unread body must not be parsed


def test_every_image_too_large_in_a_streamed_body_stops_at_the_limit() -> None:
    chunk = 1 << 16
    body = batch(*[(f"{i}.png", b"\0" * (LIMIT // 2)) for i in range(3)])
    exchange = through_gate(body, declare_length=False, chunk=chunk)
    assert_refused(exchange, 413, "too_large", "KITCHENWARE_MAX_UPLOAD_BYTES")
    assert exchange.chunks_read == LIMIT // chunk + 1  # not one chunk past the limit
    assert exchange.headers["connection"] == "close"


# --- refused: too slow ---


def test_a_body_slower_than_the_minimum_rate_is_cut_off_with_a_408() -> None:
    exchange = Exchange()
    body = batch(("a.png", PNG))

    async def trickle() -> Message:  # one byte now, then nothing more for a long time
        exchange.chunks_read += 1
        if exchange.chunks_read == 1:
            return {"type": "http.request", "body": body[:1], "more_body": True}
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        exchange.sent.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _recording_app(exchange, scope, receive, send)

    gate = UploadGate(
        app,
        routes=ROUTES,
        max_upload_bytes=LIMIT,
        pace=UploadPace(min_bytes_per_s=1000, grace_s=0.2),
        on_reject=exchange.rejections.append,
    )
    scope = {"type": "http", "path": "/classify_batch", "method": "POST", "headers": HEADERS}
    started = time.monotonic()
    asyncio.run(gate(scope, trickle, send))
    assert time.monotonic() - started < 5
    refused = assert_refused(
        exchange, 408, "upload_too_slow", "1,000 bytes/s", "KITCHENWARE_MIN_UPLOAD_BYTES_PER_S"
    )
    assert refused["limit"] == 1000 and exchange.headers["connection"] == "close"


# --- not the gate's business: passed through or answered plainly ---


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
def test_a_correction_by_id_as_json_or_form_reaches_the_service(content_type: str) -> None:
    """BentoML's own client sends /feedback without a file as a form; curl users send JSON."""
    routes = {"/feedback": FileField("image", max_files=1, optional=True, accepts_forms=True)}
    body = b'{"request_id": "abc", "label": "cup"}'
    exchange = through_gate(body, path="/feedback", content_type=content_type, routes=routes)
    assert exchange.status == 200 and exchange.app_body == body


def test_a_client_that_disconnects_mid_body_gets_nothing_and_is_not_counted() -> None:
    body = batch(("a.png", PNG), ("b.jpg", JPEG))
    exchange = through_gate(body, chunk=100, disconnect_after=3)
    assert exchange.sent == [] and not exchange.app_complete
    assert exchange.rejections == []
    assert exchange.chunks_read == 3


def test_options_preflight_passes_through_with_its_body_unread() -> None:
    exchange = through_gate(b"", method="OPTIONS", content_type=None)
    assert exchange.status == 200 and exchange.app_scope is not None
    assert exchange.rejections == []


def test_get_on_an_upload_route_is_a_405_that_says_post() -> None:
    exchange = through_gate(method="GET", content_type=None)
    assert exchange.status == 405 and exchange.headers["allow"] == "POST"
    assert "POST" in exchange.json()["error"] and exchange.app_scope is None


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/classify/extra"])
def test_other_paths_and_scopes_pass_through(path: str) -> None:
    exchange = through_gate(b"not multipart", path=path, content_type="text/plain")
    assert exchange.status == 200 and exchange.app_body == b"not multipart"  # untouched
    lifespan = through_gate(scope_type="lifespan")
    assert lifespan.app_scope == {"type": "lifespan"}


# --- a batch whose images fail to decode: one answer naming each ---


def send_response(response: JSONResponse) -> tuple[int, dict[str, Any]]:
    """Drive the response as the ASGI app it is; returns (status, JSON body) as sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(response({"type": "http"}, receive, send))
    return int(sent[0]["status"]), json.loads(sent[1]["body"])


def decode_batch(tmp_path: Path, files: list[tuple[str, bytes]]) -> tuple[int, dict[str, Any]]:
    uploads = []
    for index, (name, data) in enumerate(files):
        path = tmp_path / f"upload-{index}"
        path.write_bytes(data)
        uploads.append(Upload(path, name))
    images, failures = stack_decoded(
        [decode_one(u, i, "images", 32, 10_000, indexed=True) for i, u in enumerate(uploads)]
    )
    assert failures, "every case here has at least one bad image"
    assert images.size == 0  # nothing goes to the model when any image failed
    return send_response(decode_failure_response(failures))


def test_several_failing_images_in_one_batch_are_each_named(tmp_path: Path) -> None:
    status, body = decode_batch(
        tmp_path,
        [
            ("ok.png", PNG),
            ("notes.txt", b"words"),
            ("empty.jpg", b""),
            ("half.jpg", JPEG[: len(JPEG) // 2]),
        ],
    )
    assert status == 400
    assert body["error"].startswith("images[1] 'notes.txt' is not an image")
    assert body["error"].endswith("(2 more image(s) failed too; see 'failures'.)")
    assert [(f["index"], f["filename"], f["reason"]) for f in body["failures"]] == [
        (1, "notes.txt", "not_an_image"),
        (2, "empty.jpg", "empty"),
        (3, "half.jpg", "corrupt"),
    ]
    assert all(f["filename"] in f["error"] for f in body["failures"])


def test_all_images_too_large_is_a_413(tmp_path: Path) -> None:
    big = image_bytes((20, 200, 20), size=(200, 100))  # 20,000 pixels, limit 10,000
    status, body = decode_batch(tmp_path, [("a.png", big), ("b.png", big)])
    assert status == 413 and body["reason"] == "too_many_pixels"
    assert "images[0] 'a.png'" in body["error"] and "10,000 pixels" in body["error"]
    assert [f["reason"] for f in body["failures"]] == ["too_many_pixels"] * 2


def test_a_batch_with_one_image_too_large_and_one_unreadable_leads_with_the_400(
    tmp_path: Path,
) -> None:
    big = image_bytes((20, 200, 20), size=(200, 100))
    status, body = decode_batch(tmp_path, [("big.png", big), ("notes.txt", b"words")])
    assert status == 400
    # The headline matches the status: a 400 does not say "too many pixels".
    assert body["reason"] == "not_an_image"
    assert body["error"].startswith("images[1] 'notes.txt'")
    assert [f["reason"] for f in body["failures"]] == ["too_many_pixels", "not_an_image"]


def explain_body(label_content_type: str | None) -> bytes:
    """/explain: the photo, then text field `label` = 3, sent with the given Content-Type."""
    typed = f"Content-Type: {label_content_type}\r\n" if label_content_type else ""
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + PNG
        + f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="label"\r\n{typed}\r\n'
        f"3\r\n--{BOUNDARY}--\r\n".encode()
    )


@pytest.mark.parametrize("content_type", [None, "text/plain; charset=utf-8"])
def test_a_plain_text_field_reaches_the_service(content_type: str | None) -> None:
    exchange = through_gate(explain_body(content_type), path="/explain")
    assert exchange.status == 200 and exchange.app_scope is not None


@pytest.mark.parametrize("content_type", ["application/json", "application/octet-stream"])
def test_a_text_field_sent_as_json_or_bytes_is_refused_in_a_sentence(content_type: str) -> None:
    """BentoML would decode it as JSON (a number, an object) and answer an off-schema 400."""
    exchange = through_gate(explain_body(content_type), path="/explain")
    assert_refused(exchange, 400, "not_text", "'label'", "one text value")
    assert not exchange.app_complete
