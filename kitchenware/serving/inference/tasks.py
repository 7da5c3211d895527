"""Big batches as BentoML background tasks: `/classify_batch_async/{submit,status,get}`.

What service.py's task endpoint needs around the model: expand one zip (or several) of
photos into uploads within the limits, decode chunk by chunk while the previous chunk is
classified, keep the client's file names across BentoML's task store, and answer an
unknown task id (a server restarted since, or another worker) with a 404 that says why.

BentoML's local task store is one SQLite file per server (kitchenware/serving/instancedir.py),
shared by its workers and recreated at every server start: results do not survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kitchenware.runtime.preprocessing import ImageDecodeError
from kitchenware.serving.http.errors import ClientError, error_answer, error_body
from kitchenware.serving.http.uploads import UPLOAD_NAMES_SCOPE_KEY
from kitchenware.serving.inference.decoding import (
    DecodeFailure,
    Upload,
    decode_failure_response,
    decode_upload,
    uploads_from,
)
from kitchenware.serving.metrics import count_rejection

FIELD = "images"
NAMES_HEADER = "x-kitchenware-upload-names"  # survives BentoML's stored copy of the request
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
QUEUE_RETRY_S = 1.0  # a task waits for a full inference queue instead of failing...
QUEUE_WAIT_MAX_S = 600.0  # ...for this long at most


@dataclass(frozen=True)
class TaskLimits:
    max_files: int  # images per task, zip members included (KITCHENWARE_MAX_TASK_FILES)
    max_unzipped_bytes: int  # all zip members together (KITCHENWARE_MAX_TASK_UNZIPPED_BYTES)
    max_pixels: int
    chunk_size: int  # images per model call


class TaskRejected(ClientError):
    def response(self) -> JSONResponse:
        return error_answer(self.body(), self.status_code)


def is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) in ZIP_MAGIC


def _members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Files in archive order, without folders and macOS/hidden clutter."""
    return [
        info
        for info in archive.infolist()
        if not info.is_dir()
        and not info.filename.startswith("__MACOSX/")
        and not PurePosixPath(info.filename).name.startswith(".")
    ]


def expand_archives(uploads: list[Upload], limits: TaskLimits, workdir: Path) -> list[Upload]:
    """Each zip upload replaced by its members (written under `workdir`), in order."""
    expanded: list[Upload] = []
    unzipped = 0
    for index, upload in enumerate(uploads):
        if not is_zip(upload.path):
            expanded.append(upload)
            continue
        where = upload.label(FIELD, index)
        try:
            with zipfile.ZipFile(upload.path) as archive:
                members = _members(archive)
                if not members:
                    raise TaskRejected(
                        400, "empty", f"{where} holds no files (folders and hidden files aside)."
                    )
                for number, info in enumerate(members):
                    if info.flag_bits & 0x1:
                        raise TaskRejected(
                            400, "encrypted_zip", f"{where}: {info.filename} is encrypted."
                        )
                    unzipped += info.file_size
                    if unzipped > limits.max_unzipped_bytes:
                        raise TaskRejected(
                            413,
                            "too_large",
                            f"{where} unpacks to more than {limits.max_unzipped_bytes:,} bytes "
                            "(KITCHENWARE_MAX_TASK_UNZIPPED_BYTES).",
                            limit=limits.max_unzipped_bytes,
                        )
                    target = workdir / f"{index}-{number}"
                    with archive.open(info) as source:
                        data = source.read(info.file_size + 1)  # never more than declared
                    if len(data) > info.file_size:
                        raise TaskRejected(400, "corrupt", f"{where}: {info.filename} is corrupt.")
                    target.write_bytes(data)
                    name = f"{upload.filename or 'archive.zip'}/{info.filename}"
                    expanded.append(Upload(target, name))
        except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
            raise TaskRejected(400, "corrupt", f"{where} is not a readable zip: {exc}.") from exc
        if len(expanded) > limits.max_files:
            break
    if len(expanded) > limits.max_files:
        raise TaskRejected(
            413,
            "too_many_files",
            f"The task holds more than {limits.max_files} images, over the limit "
            "(KITCHENWARE_MAX_TASK_FILES).",
            field=FIELD,
            limit=limits.max_files,
        )
    return expanded


def task_uploads(paths: list[Path], request: Any) -> list[Upload]:
    """BentoML's files paired with the client's names (from the header TaskUploadNames set)."""
    scope = dict(getattr(request, "scope", None) or {})
    raw = Headers(scope=scope).get(NAMES_HEADER) if "headers" in scope else None
    if raw and UPLOAD_NAMES_SCOPE_KEY not in scope:
        with contextlib.suppress(ValueError):  # a mangled header costs the names, not the task
            scope[UPLOAD_NAMES_SCOPE_KEY] = json.loads(raw)
    return uploads_from(paths, scope)


Classify = Callable[[np.ndarray], Awaitable["np.ndarray | JSONResponse"]]


async def classify_task(
    uploads: list[Upload],
    limits: TaskLimits,
    image_size: int,
    classify: Classify,
    limiter: anyio.CapacityLimiter,
) -> tuple[list[Upload], np.ndarray] | JSONResponse:
    """Zips expanded, every image decoded and classified in request order, or an error answer.

    Chunk k+1 decodes while chunk k is classified. Any bad image fails the task with the same
    400 body /classify_batch gives (every bad image listed); a full queue is waited out.
    """
    with tempfile.TemporaryDirectory(prefix="kitchenware-task-") as scratch:
        try:
            uploads = await anyio.to_thread.run_sync(
                expand_archives, uploads, limits, Path(scratch), limiter=limiter
            )
        except TaskRejected as rejected:
            return rejected.response()
        chunks = [
            uploads[start : start + limits.chunk_size]
            for start in range(0, len(uploads), limits.chunk_size)
        ]

        async def decode(index: int) -> tuple[np.ndarray, list[DecodeFailure]]:
            start = index * limits.chunk_size
            return await anyio.to_thread.run_sync(
                decode_chunk, chunks[index], start, image_size, limits.max_pixels, limiter=limiter
            )

        failures: list[DecodeFailure] = []
        rows: list[np.ndarray] = []
        upcoming = asyncio.ensure_future(decode(0))
        for index in range(len(chunks)):
            batch, chunk_failures = await upcoming
            if index + 1 < len(chunks):
                upcoming = asyncio.ensure_future(decode(index + 1))
            failures.extend(chunk_failures)
            if failures:
                continue  # keep decoding, to list every bad image in the answer
            probabilities = await _classify_waiting(batch, classify)
            if isinstance(probabilities, JSONResponse):
                upcoming.cancel()
                return probabilities
            rows.append(probabilities)
    if failures:
        return decode_failure_response(failures)
    return uploads, np.concatenate(rows)


def decode_chunk(
    uploads: list[Upload], start: int, image_size: int, max_pixels: int
) -> tuple[np.ndarray, list[DecodeFailure]]:
    """Decode uploads[start:...] of a task (blocking); errors name the position in the task."""
    arrays: list[np.ndarray] = []
    failures: list[DecodeFailure] = []
    for index, upload in enumerate(uploads, start):
        try:
            data = upload.path.read_bytes()
            arrays.append(decode_upload(data, image_size, upload.label(FIELD, index), max_pixels))
        except ImageDecodeError as exc:
            count_rejection(exc.reason)
            failures.append(DecodeFailure(index, upload.filename, exc))
    batch = np.stack(arrays) if arrays and not failures else np.zeros((0,), np.uint8)
    return batch, failures


async def _classify_waiting(batch: np.ndarray, classify: Classify) -> np.ndarray | JSONResponse:
    """A background task has no client waiting: wait out a full queue (503), then go on."""
    deadline = time.monotonic() + QUEUE_WAIT_MAX_S
    while True:
        probabilities = await classify(batch)
        busy = isinstance(probabilities, JSONResponse) and probabilities.status_code == 503
        if not busy or time.monotonic() > deadline:
            return probabilities
        await asyncio.sleep(QUEUE_RETRY_S)


def unknown_task_body(task_id: str) -> dict[str, str]:
    message = (
        f"No task {task_id!r} on this server. Task results live in one SQLite file, "
        "shared by the workers and recreated at every start: a task submitted "
        "before a restart is gone. Submit it again."
    )
    return error_body(message, "unknown_task", task_id=task_id)


class TaskRoutes:
    """ASGI middleware for the task routes (add it after UploadGate, so it runs inside it).

    - submit: copies the client's file names (which UploadGate records in the scope) into a
      header, because BentoML stores the request for the task without the scope's extras;
    - status/get/retry: BentoML's bare 404 for an unknown id becomes a sentence saying why.
    """

    def __init__(self, app: ASGIApp, *, routes: Iterable[str]) -> None:
        """`routes`: the task's POST paths (the call and its submit) from the routes table."""
        self.app = app
        self.routes = frozenset(routes)
        route = min(self.routes, key=len)  # the task's own path; the others extend it
        self.lookups = {f"{route}/{name}" for name in ("status", "get", "retry")}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path in self.routes:
            headers = [(k, v) for k, v in scope.get("headers", []) if k != NAMES_HEADER.encode()]
            outer, scope = scope, {**scope, "headers": headers}
            receive = _naming_uploads(outer, scope, receive)
        if path not in self.lookups:
            await self.app(scope, receive, send)
            return
        task_id = dict(_query(scope)).get("task_id", "")
        started: Message | None = None

        async def rewrite_404(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and message["status"] == 404:
                started = message  # hold it: the body is replaced below
                return
            if started is not None and message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                answer = error_answer(unknown_task_body(task_id), 404)
                await answer(scope, receive, send)
                return
            await send(message)

        await self.app(scope, receive, rewrite_404)


def _naming_uploads(outer: Scope, scope: Scope, receive: Receive) -> Receive:
    """receive() that adds the names header once UploadGate has named every part.

    UploadGate records the names when the body is complete, so the header joins the scope's
    header list then (in place: a Request made earlier reads the same list).
    """

    async def named() -> Message:
        message = await receive()
        names = outer.get(UPLOAD_NAMES_SCOPE_KEY)
        if isinstance(names, list) and not message.get("more_body", False):
            scope["headers"].append((NAMES_HEADER.encode(), json.dumps(names).encode("ascii")))
        return message

    return named


def _query(scope: Scope) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(scope.get("query_string", b"").decode("latin-1"))
