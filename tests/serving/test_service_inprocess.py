"""The service's ASGI app in this process (Starlette TestClient): endpoints, schema, order.

In-process, `bentoml.depends` gives the front service a local model-service instance, so
these tests cover everything but the process hop and the batcher (see
test_service_served.py for those).
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pytest
from support.images import image_bytes
from support.service import CLASS_COLOURS, CLASS_NAMES, DEMO_MODEL_TAG, build_colour_model

if TYPE_CHECKING:
    import bentoml

# PROMETHEUS_MULTIPROC_DIR: tests/conftest.py sets it before anything imports prometheus_client.
# The colour model is imported under the demo model's name, not the default real model's.
os.environ.setdefault("KITCHENWARE_MODEL_TAG", DEMO_MODEL_TAG)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette suggests `httpx2`; httpx works fine here
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    from kitchenware.modelbuild.store import import_model_dir

    base = tmp_path_factory.mktemp("inprocess")
    # Point this process's model store at a temp dir, never ~/bentoml.
    BentoMLContainer.model_store.set(ModelStore(str(base / "bentoml_home" / "models")))
    try:
        import_model_dir(build_colour_model(base / "model"))
        import service

        app = cast("bentoml.Service[service.Kitchenware]", service.Kitchenware).to_asgi()
        with TestClient(app) as test_client:
            yield test_client
    finally:
        BentoMLContainer.model_store.reset()


def colour_png(name: str, size: tuple[int, int] = (48, 36)) -> bytes:
    return image_bytes(tuple(int(c * 200 + 25) for c in CLASS_COLOURS[name]), size=size)


def test_classify_answers_label_confidence_probabilities_top_k_and_model(
    client: TestClient,
) -> None:
    response = client.post("/classify", files={"image": ("mug.png", colour_png("cup"))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "cup"
    assert list(body["probabilities"]) == CLASS_NAMES  # every class, in the model's order
    assert body["confidence"] == body["probabilities"]["cup"] == max(body["probabilities"].values())
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-5
    scores = [entry["probability"] for entry in body["top_k"]]
    assert len(body["top_k"]) == 3 and scores == sorted(scores, reverse=True)
    assert body["top_k"][0]["label"] == "cup"
    assert body["model"].startswith("kitchenware:") and len(body["model"]) > len("kitchenware:")
    assert body["filename"] == "mug.png"


def test_classify_batch_keeps_request_order(client: TestClient) -> None:
    names = [*CLASS_NAMES, *CLASS_NAMES]
    random.Random(3).shuffle(names)
    files = [
        ("images", (f"{i}-{name}.png", colour_png(name, (30 + i, 30))))
        for i, name in enumerate(names)
    ]
    response = client.post("/classify_batch", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(names)
    assert [r["filename"] for r in body["results"]] == [f for _, (f, _) in files]
    assert [r["label"] for r in body["results"]] == names
    for (_, (filename, data)), result in zip(files, body["results"], strict=True):
        single = client.post("/classify", files={"image": (filename, data)}).json()
        batched = np.array(list(result["probabilities"].values()))
        alone = np.array(list(single["probabilities"].values()))
        assert np.max(np.abs(batched - alone)) <= 1e-5


def test_openapi_schema_offers_file_fields_for_swagger(client: TestClient) -> None:
    paths = client.get("/docs.json").json()["paths"]
    single = paths["/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert single["schema"]["properties"]["image"] == {
        "format": "binary",
        "title": "Image",
        "type": "string",
    }
    batch = paths["/classify_batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    images = batch["schema"]["properties"]["images"]
    assert images["type"] == "array"
    assert images["items"] == {"format": "binary", "type": "string"}


def test_swagger_ui_health_and_metrics_endpoints(client: TestClient) -> None:
    index = client.get("/")
    assert index.status_code == 200 and "swagger-ui" in index.text
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    client.post("/classify", files={"image": ("k.png", colour_png("knife"))})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'kitchenware_predictions_total{label="knife"}' in metrics.text
    assert "kitchenware_decode_seconds_bucket" in metrics.text


@pytest.mark.parametrize(
    ("files", "status", "reason"),
    [
        ({"image": ("n.txt", b"plain text", "text/plain")}, 400, "not_an_image"),
        ({"image": ("e.jpg", b"", "image/jpeg")}, 400, "empty"),
        ({"picture": ("a.png", b"x", "image/png")}, 400, "missing_field"),
        ([("image", ("a.png", b"x")), ("image", ("b.png", b"y"))], 400, "too_many_files"),
    ],
    ids=["text", "empty", "misnamed-field", "two-files"],
)
def test_client_mistakes_get_json_errors(
    client: TestClient, files: object, status: int, reason: str
) -> None:
    response = client.post("/classify", files=files)
    assert response.status_code == status
    assert response.json()["reason"] == reason
    assert response.json()["error"]


def test_json_body_is_refused_with_a_hint(client: TestClient) -> None:
    response = client.post("/classify", json={"image": "/etc/passwd"})
    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["error"]


def test_default_pixel_limit_stops_a_decompression_bomb(client: TestClient, tmp_path: Path) -> None:
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (8000, 7000)).save(bomb)  # 56 M pixels in a few kB
    response = client.post("/classify", files={"image": ("bomb.png", bomb.read_bytes())})
    assert response.status_code == 413
    assert "50,000,000" in response.json()["error"]


def test_a_bad_image_in_a_batch_is_named_by_position(client: TestClient) -> None:
    files = [
        ("images", ("ok.png", colour_png("fork"))),
        ("images", ("oops.txt", b"words")),
        ("images", ("fine.png", colour_png("knife"))),
    ]
    response = client.post("/classify_batch", files=files)
    assert response.status_code == 400
    assert response.json()["error"].startswith("images[1] 'oops.txt' is not an image")


def test_get_on_an_endpoint_says_to_post(client: TestClient) -> None:
    response = client.get("/classify")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert "POST with multipart/form-data" in response.json()["error"]
