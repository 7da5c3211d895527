"""kitchenware.serving.inference.tasks without a server: zips, limits, chunked decode, 404s.

The model is the real colour CNN through load_backend; the middleware is driven as an ASGI
app with the messages a server would send.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send
from support.batch import colour_of
from support.images import image_bytes

from kitchenware.serving.http.uploads import UPLOAD_NAMES_SCOPE_KEY
from kitchenware.serving.inference.decoding import Upload
from kitchenware.serving.inference.tasks import (
    NAMES_HEADER,
    TaskLimits,
    TaskRejected,
    TaskRoutes,
    classify_task,
    expand_archives,
    task_uploads,
)
from kitchenware.serving.routes import routes, task_paths
from kitchenware.serving.settings import ServiceSettings

LIMITS = TaskLimits(max_files=10, max_unzipped_bytes=1 << 20, max_pixels=10**6, chunk_size=2)
TASK_PATHS = task_paths(routes(ServiceSettings()))  # not get_settings(): it caches at collection
LABELS = ["cup", "glass", "plate", "spoon", "fork", "knife"]


def png(label: str) -> bytes:
    return image_bytes(colour_of(label), fmt="PNG")


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_members_replace_the_zip_in_order(tmp_path: Path) -> None:
    single = tmp_path / "upload-0"
    single.write_bytes(png("cup"))
    members = {
        "photos/plate.png": png("plate"),
        "photos/": b"",
        "__MACOSX/photos/._plate.png": b"junk",
        "photos/.DS_Store": b"junk",
        "photos/fork.png": png("fork"),
    }
    archive = write_zip(tmp_path / "upload-1", members)
    work = tmp_path / "work"
    work.mkdir()
    uploads = [Upload(single, "cup.png"), Upload(archive, "kitchen.zip")]
    expanded = expand_archives(uploads, LIMITS, work)
    assert [u.filename for u in expanded] == [
        "cup.png",
        "kitchen.zip/photos/plate.png",
        "kitchen.zip/photos/fork.png",
    ]
    assert expanded[2].path.read_bytes() == members["photos/fork.png"]


@pytest.mark.parametrize(
    ("members", "status", "reason"),
    [
        ({f"{i}.png": png("cup") for i in range(11)}, 413, "too_many_files"),
        ({"big.bin": b"\0" * (LIMITS.max_unzipped_bytes + 1)}, 413, "too_large"),
        ({}, 400, "empty"),
    ],
)
def test_zip_limits(tmp_path: Path, members: dict[str, bytes], status: int, reason: str) -> None:
    archive = write_zip(tmp_path / "a.zip", members)
    with pytest.raises(TaskRejected) as caught:
        expand_archives([Upload(archive, "a.zip")], LIMITS, tmp_path)
    assert (caught.value.status_code, caught.value.reason) == (status, reason)
    body = json.loads(bytes(caught.value.response().body))
    assert body["reason"] == reason
    assert "a.zip" in body["error"] or "KITCHENWARE_MAX_TASK_FILES" in body["error"]


def test_a_damaged_zip_is_a_400(tmp_path: Path) -> None:
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.png", png("cup") * 4)
    damaged = tmp_path / "d.zip"
    damaged.write_bytes(good.getvalue()[:60])  # local header intact, the rest gone
    with pytest.raises(TaskRejected) as caught:
        expand_archives([Upload(damaged, "d.zip")], LIMITS, tmp_path)
    assert (caught.value.status_code, caught.value.reason) == (400, "corrupt")


@pytest.fixture(scope="module")
def colour_backend(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from support.service import build_colour_model

    from kitchenware.runtime.backends import load_backend

    return load_backend(build_colour_model(tmp_path_factory.mktemp("m") / "colour"), "tensorflow")


def run_task(backend: Any, uploads: list[Upload], calls: list[int]) -> Any:
    async def classify(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return backend.predict_arrays(batch.astype(np.float32))

    async def main() -> Any:
        limiter = anyio.CapacityLimiter(2)
        return await classify_task(uploads, LIMITS, backend.image_size, classify, limiter)

    return asyncio.run(main())


def test_classify_task_in_request_order_in_chunks(colour_backend: Any, tmp_path: Path) -> None:
    order = ["knife", "cup", "spoon", "glass", "fork", "plate", "cup"]
    uploads = []
    for index, label in enumerate(order[:4]):
        path = tmp_path / f"u{index}"
        path.write_bytes(png(label))
        uploads.append(Upload(path, f"{label}.png"))
    archive = write_zip(
        tmp_path / "z", {f"{i}-{lab}.png": png(lab) for i, lab in enumerate(order[4:])}
    )
    uploads.append(Upload(archive, "rest.zip"))
    calls: list[int] = []
    result = run_task(colour_backend, uploads, calls)
    assert not isinstance(result, JSONResponse)
    expanded, probabilities = result
    labels = [LABELS[int(i)] for i in probabilities.argmax(axis=1)]
    assert labels == order
    assert [u.filename for u in expanded][-1] == "rest.zip/2-cup.png"
    assert calls == [2, 2, 2, 1]  # chunk_size 2: never one giant model call


def test_every_bad_image_is_named_by_its_place_in_the_task(
    colour_backend: Any, tmp_path: Path
) -> None:
    uploads = []
    for index in range(5):
        path = tmp_path / f"u{index}"
        path.write_bytes(b"not an image" if index in (1, 3) else png("cup"))
        uploads.append(Upload(path, f"f{index}.png"))
    calls: list[int] = []
    result = run_task(colour_backend, uploads, calls)
    assert isinstance(result, JSONResponse) and result.status_code == 400
    body = json.loads(bytes(result.body))
    assert body["reason"] == "not_an_image"
    assert body["error"].startswith("images[1] 'f1.png'")
    assert [f["index"] for f in body["failures"]] == [1, 3]
    assert "images[3] 'f3.png'" in body["failures"][1]["error"]


def test_task_uploads_take_names_from_the_header(tmp_path: Path) -> None:
    paths = [tmp_path / "a", tmp_path / "b"]

    from starlette.requests import Request

    # What BentoML rebuilds from its task store: the headers, not the gate's scope key.
    stored = Request({"type": "http", "headers": [(NAMES_HEADER.encode(), b'["x.jpg", "y.zip"]')]})
    assert [u.filename for u in task_uploads(paths, stored)] == ["x.jpg", "y.zip"]


async def _drive(app: Any, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _scope(path: str, query: bytes = b"", **extra: Any) -> Scope:
    base = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": []}
    return {**base, **extra}


def test_unknown_task_id_gets_a_404_that_says_why() -> None:
    async def bentoml_404(scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"error": "task_id not found"}, status_code=404)(scope, receive, send)

    app = TaskRoutes(bentoml_404, routes=TASK_PATHS)
    for route in ("status", "get", "retry"):
        sent = asyncio.run(_drive(app, _scope(f"/classify_batch_async/{route}", b"task_id=abc")))
        assert sent[0]["status"] == 404
        body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
        assert body["reason"] == "unknown_task" and body["task_id"] == "abc"
        assert "recreated at every start" in body["error"]
        raw = b"".join(m.get("body", b"") for m in sent[1:])
        assert int(dict(sent[0]["headers"])[b"content-length"]) == len(raw)

    async def found(scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"status": "completed"})(scope, receive, send)

    sent = asyncio.run(
        _drive(TaskRoutes(found, routes=TASK_PATHS), _scope("/classify_batch_async/status"))
    )
    assert sent[0]["status"] == 200


def test_submit_carries_the_client_names_in_a_header() -> None:
    seen: dict[bytes, bytes] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the names join the headers once the body is complete
        seen.update(dict(scope["headers"]))
        await JSONResponse({})(scope, receive, send)

    scope = _scope(
        "/classify_batch_async/submit", method="POST", headers=[(NAMES_HEADER.encode(), b'["x"]')]
    )
    scope[UPLOAD_NAMES_SCOPE_KEY] = ["café.jpg", "b.zip"]
    asyncio.run(_drive(TaskRoutes(app, routes=TASK_PATHS), scope))
    assert json.loads(seen[NAMES_HEADER.encode()]) == [
        "café.jpg",
        "b.zip",
    ]  # the client's own is dropped
