"""The async task endpoint on a real `bentoml serve`: submit, status, get, and a restart."""

from __future__ import annotations

import io
import time
import zipfile
from typing import Any

import httpx
import pytest
from support.batch import colour_of
from support.images import image_bytes
from support.service import import_into_store, serve, store_env

pytestmark = pytest.mark.slow
ROUTE = "/classify_batch_async"
MAX_TASK_FILES = 8


def png(label: str, shade: int = 0) -> bytes:
    return image_bytes(colour_of(label, shade), fmt="PNG")


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def wait_done(client: httpx.Client, task_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"{ROUTE}/status", params={"task_id": task_id})
        assert status.status_code == 200, status.text
        if status.json()["status"] not in ("pending", "in_progress"):
            return dict(status.json())
        time.sleep(0.3)
    raise TimeoutError(f"task {task_id} still running after {timeout} s")


def submit(client: httpx.Client, files: list[tuple[str, bytes]]) -> httpx.Response:
    parts = [("images", (name, data, "application/octet-stream")) for name, data in files]
    return client.post(f"{ROUTE}/submit", files=parts)


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from support.service import build_colour_model

    base = tmp_path_factory.mktemp("tasks")
    home = base / "bentoml_home"
    import_into_store(build_colour_model(base / "colour"), home)
    return store_env(home, max_task_files=str(MAX_TASK_FILES), max_batch_size="4")


def test_task_round_trip_then_a_restart_forgets_it(server_env: dict[str, str]) -> None:
    singles = [("knife.png", png("knife")), ("cup.png", png("cup")), ("glass.png", png("glass"))]
    archive = zip_of({"k/plate.png": png("plate"), "k/fork.png": png("fork", 5)})
    with (
        serve("service:Kitchenware", server_env) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        schema = client.get("/docs.json").json()
        assert {f"{ROUTE}/submit", f"{ROUTE}/status", f"{ROUTE}/get"} <= set(schema["paths"])

        answer = submit(client, [*singles, ("kitchen.zip", archive)])
        assert answer.status_code == 200, answer.text
        task_id = answer.json()["task_id"]
        assert wait_done(client, task_id)["status"] == "completed"
        result = client.get(f"{ROUTE}/get", params={"task_id": task_id})
        assert result.status_code == 200, result.text
        body = result.json()
        assert body["count"] == 5
        assert [r["label"] for r in body["results"]] == [
            "knife",
            "cup",
            "glass",
            "plate",
            "fork",
        ]
        zipped_names = ["kitchen.zip/k/plate.png", "kitchen.zip/k/fork.png"]
        assert [r["filename"] for r in body["results"]] == [n for n, _ in singles] + zipped_names
        assert body["request_id"] == answer.headers["x-request-id"]  # the submit's id

        # Same schema and numbers as /classify_batch for the same files.
        parts = [("images", (n, d, "image/png")) for n, d in singles]
        batch = client.post("/classify_batch", files=parts).json()
        assert set(batch) == set(body)
        for ours, theirs in zip(body["results"][:3], batch["results"], strict=True):
            assert set(ours) == set(theirs)
            assert ours["label"] == theirs["label"]
            assert ours["confidence"] == pytest.approx(theirs["confidence"], abs=1e-5)

        # A bad image fails the task with the 400 body /classify_batch would give.
        bad = submit(client, [("cup.png", png("cup")), ("notes.txt", b"hello")]).json()
        assert wait_done(client, bad["task_id"])["status"] == "failed"
        failed = client.get(f"{ROUTE}/get", params={"task_id": bad["task_id"]})
        assert failed.status_code == 400
        assert failed.json()["reason"] == "not_an_image"
        assert failed.json()["error"].startswith("images[1] 'notes.txt'")

        # Limits: too many parts is refused at submit by the upload gate; a zip that
        # unpacks past the limit fails its task with a 413 body.
        over = submit(client, [(f"{i}.png", png("cup")) for i in range(MAX_TASK_FILES + 1)])
        assert over.status_code == 413 and over.json()["reason"] == "too_many_files"
        big_zip = zip_of({f"{i}.png": png("cup") for i in range(MAX_TASK_FILES + 1)})
        zipped = submit(client, [("many.zip", big_zip)]).json()
        assert wait_done(client, zipped["task_id"])["status"] == "failed"
        refused = client.get(f"{ROUTE}/get", params={"task_id": zipped["task_id"]})
        assert refused.status_code == 413 and refused.json()["reason"] == "too_many_files"

        missing = client.get(f"{ROUTE}/status")
        assert missing.status_code == 400  # no task_id at all: BentoML's own 400

    with (
        serve("service:Kitchenware", server_env) as restarted,
        httpx.Client(base_url=restarted.url, timeout=60) as client,
    ):
        for route in ("status", "get"):
            gone = client.get(f"{ROUTE}/{route}", params={"task_id": task_id})
            assert gone.status_code == 404, gone.text
            assert gone.json()["reason"] == "unknown_task"
            assert "recreated at every start" in gone.json()["error"]
