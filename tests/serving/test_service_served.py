"""The service as users meet it: `bentoml serve` in a subprocess, real HTTP from outside."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import pytest
from bentoml.exceptions import BentoMLException
from support.images import image_bytes
from support.service import CLASS_COLOURS, ServedService, shared_server
from support.upload_catalogue import Case, catalogue

from kitchenware.serving.http.requestid import WELL_FORMED
from kitchenware.serving.http.servertiming import parse as parse_server_timing

pytestmark = pytest.mark.slow

CASES = catalogue()


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ServedService:
    return shared_server(request, tmp_path_factory.getbasetemp())


def test_catalogue_covers_at_least_twenty_upload_kinds() -> None:
    assert len({case.id for case in CASES}) == len(CASES) >= 20
    assert {case.status for case in CASES} == {200, 400, 413}
    # Every refusal checks its sentence, so the mentions loop below never silently skips.
    assert [case.id for case in CASES if case.status != 200 and not case.mentions] == []


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_upload_catalogue(server: ServedService, case: Case) -> None:
    response = httpx.post(server.url + case.route, timeout=60, **case.request())
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if case.status == 200:
        assert body["model"] == server.extra["tag"]
        assert set(body["probabilities"]) == set(CLASS_COLOURS)
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
        if case.label is not None:
            assert body["label"] == case.label
        return
    assert isinstance(body, dict) and isinstance(body["error"], str), body
    assert body["reason"] == case.reason
    assert body["error"].endswith((".", ")")), "errors are sentences"
    for word in case.mentions:
        assert word in body["error"], (word, body["error"])
    assert "Traceback" not in body["error"]


def test_python_client(server: ServedService, tmp_path: Path) -> None:
    cup, plate, notes = tmp_path / "cup.png", tmp_path / "plate.jpg", tmp_path / "notes.txt"
    cup.write_bytes(image_bytes((230, 20, 20)))
    plate.write_bytes(image_bytes((20, 20, 230), "JPEG"))
    notes.write_text("not a photo")
    with bentoml.SyncHTTPClient(server.url) as client:
        single = client.classify(image=cup)
        batch = client.classify_batch(images=[plate, cup])
        with pytest.raises(BentoMLException) as refused:
            client.classify(image=notes)
    assert single["label"] == "cup" and single["filename"] == "cup.png"
    assert [r["label"] for r in batch["results"]] == ["plate", "cup"]
    assert refused.value.error_code == 400
    assert "notes.txt" in str(refused.value)
    # The id is a field of the schema, so BentoML's client keeps it (issue 17).
    assert WELL_FORMED.fullmatch(single["request_id"])
    assert batch["request_id"] != single["request_id"]
    assert {r["request_id"] for r in batch["results"]} == {batch["request_id"]}


def test_stock_clients_classify_then_correct_by_request_id(
    server: ServedService, tmp_path: Path
) -> None:
    """classify -> feedback by id with BentoML's own clients, no multipart by hand."""
    cup = tmp_path / "cup.png"
    cup.write_bytes(image_bytes((230, 20, 20)))
    with bentoml.SyncHTTPClient(server.url) as client:
        answer = client.classify(image=cup)
        stored = client.feedback(request_id=answer["request_id"], label="glass", note="side")
        batch = client.classify_batch(images=[cup, cup])
        second = client.feedback(request_id=batch["request_id"], index=1, label="spoon")

    async def async_round_trip() -> tuple[dict[str, object], dict[str, object]]:
        async with bentoml.AsyncHTTPClient(server.url) as client:
            answer = await client.classify(image=cup)
            return answer, await client.feedback(request_id=answer["request_id"], label="fork")

    async_answer, async_stored = asyncio.run(async_round_trip())
    assert stored["prediction_request_id"] == answer["request_id"]
    assert stored["label"] == "glass" and stored["predicted_label"] == "cup"
    assert WELL_FORMED.fullmatch(stored["request_id"])
    assert stored["request_id"] != answer["request_id"]  # the id of the /feedback request
    assert second["prediction_request_id"] == batch["request_id"] and second["label"] == "spoon"
    assert async_stored["prediction_request_id"] == async_answer["request_id"]
    # JSON as curl sends it, and the answer's header and body agree on the id.
    again = httpx.post(server.url + "/classify", files={"image": ("c.png", cup.read_bytes())})
    assert again.json()["request_id"] == again.headers["x-request-id"]
    by_json = httpx.post(
        server.url + "/feedback", json={"request_id": again.json()["request_id"], "label": "knife"}
    )
    assert by_json.status_code == 200, by_json.text
    assert by_json.json()["request_id"] == by_json.headers["x-request-id"]
    unknown = httpx.post(server.url + "/feedback", json={"request_id": "nope", "label": "cup"})
    assert unknown.status_code == 404
    assert unknown.json()["request_id"] == unknown.headers["x-request-id"]


def test_error_bodies_carry_the_request_id_and_success_bodies_are_not_rewritten(
    server: ServedService,
) -> None:
    refused = httpx.post(server.url + "/classify", files={"wrong": ("a.png", b"x")})
    chosen = httpx.post(
        server.url + "/classify",
        files={"image": ("e.png", b"")},
        headers={"X-Request-ID": "client-chosen-1"},
    )
    assert refused.status_code == 400
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    assert chosen.status_code == 400 and chosen.json()["request_id"] == "client-chosen-1"
    for document in ("/docs.json", "/schema.json"):
        assert "request_id" not in httpx.get(server.url + document).json(), document


def test_schema_and_docs_describe_the_same_endpoints_and_fields(server: ServedService) -> None:
    schema = httpx.get(server.url + "/schema.json").json()
    docs = httpx.get(server.url + "/docs.json").json()
    for route in schema["routes"]:
        operation = docs["paths"][route["route"]]["post"]
        body = operation["requestBody"]["content"]
        documented = next(iter(body.values()))["schema"]
        inputs = _resolve(docs, documented)
        assert set(inputs.get("properties", {})) == set(route["input"]["properties"]), route
        answer = next(iter(operation["responses"]["200"]["content"].values()))["schema"]
        outputs = _resolve(docs, answer)
        assert set(outputs["properties"]) == set(route["output"]["properties"]), route
        assert "request_id" in outputs["properties"], route["route"]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI schema with its $ref followed."""
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_served_probabilities_equal_in_process_prediction(server: ServedService) -> None:
    from kitchenware.runtime.preprocessing import preprocess_bytes
    from kitchenware.runtime.tensorflow_backend import Classifier

    classifier = Classifier.load(Path(str(server.extra["model_dir"])))
    uploads = [
        image_bytes(colour, "JPEG", size=(123, 77))
        for colour in [(200, 40, 40), (90, 160, 30), (120, 120, 200), (250, 250, 250)]
    ]
    for data in uploads:
        served = httpx.post(f"{server.url}/classify", files={"image": ("x.jpg", data)}).json()
        expected = classifier.predict_arrays(preprocess_bytes(data, classifier.image_size))[0]
        got = np.array([served["probabilities"][name] for name in classifier.class_names])
        assert np.max(np.abs(got - expected)) <= 1e-5


def test_concurrent_single_requests_are_batched_without_errors(server: ServedService) -> None:
    colours = list(CLASS_COLOURS.items())

    async def send_all() -> list[tuple[str, httpx.Response]]:
        async with httpx.AsyncClient(timeout=120) as client:

            async def one(i: int) -> tuple[str, httpx.Response]:
                name, rgb = colours[i % len(colours)]
                data = image_bytes(tuple(int(c * 200 + 20) for c in rgb), size=(50, 40))
                response = await client.post(
                    f"{server.url}/classify", files={"image": (f"{name}.png", data)}
                )
                return name, response

            # 32: the most concurrent clients the shipped defaults answer without a 429.
            return await asyncio.gather(*(one(i) for i in range(32)))

    before = _batch_histogram(server)
    answers = asyncio.run(send_all())
    assert [r.status_code for _, r in answers] == [200] * len(answers)
    assert all(r.json()["label"] == name for name, r in answers)  # no mix-ups across a batch
    after = _batch_histogram(server)
    images, calls = after[0] - before[0], after[1] - before[1]
    assert images == len(answers)
    assert calls < images, "concurrent requests should share model calls"


def test_a_broken_photo_fails_alone_in_a_shared_model_call(server: ServedService) -> None:
    """Photos are decoded inside the batcher's call: one that cannot be decoded gets its own
    400 naming it, and the good photos of the same call still get their labels."""
    colours = list(CLASS_COLOURS.items())
    broken = {3: b"not an image at all", 9: image_bytes((10, 10, 10))[:60]}

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:

            async def one(i: int) -> httpx.Response:
                name, rgb = colours[i % len(colours)]
                data = broken.get(i) or image_bytes(tuple(int(c * 200 + 20) for c in rgb))
                return await client.post(
                    f"{server.url}/classify", files={"image": (f"{i}-{name}.png", data)}
                )

            return await asyncio.gather(*(one(i) for i in range(16)))

    before = _batch_histogram(server)
    answers = asyncio.run(send_all())
    after = _batch_histogram(server)
    for i, response in enumerate(answers):
        name = colours[i % len(colours)][0]
        if i in broken:
            assert response.status_code == 400, response.text
            assert f"{i}-{name}.png" in response.json()["error"]
        else:
            assert response.status_code == 200, response.text
            assert response.json()["label"] == name
    assert after[0] - before[0] == 16 - len(broken)  # images the model saw
    assert after[1] - before[1] < 16 - len(broken), "the requests should share model calls"


def test_answers_say_where_their_time_went(server: ServedService) -> None:
    """Server-Timing: the model call's parts (decode, infer with its batch size) and the wait
    for it, inside the app's time, inside what the client waited."""
    started = time.perf_counter()
    answer = httpx.post(f"{server.url}/classify", files={"image": ("x.png", image_bytes())})
    waited_ms = (time.perf_counter() - started) * 1000
    assert answer.status_code == 200
    header = answer.headers["server-timing"]
    assert "infer;dur=" in header and 'desc="batch of 1"' in header
    parts = parse_server_timing(header)
    assert set(parts) == {"queue", "decode", "infer", "app"}
    assert min(parts.values()) >= 0
    assert parts["queue"] + parts["decode"] + parts["infer"] <= parts["app"] <= waited_ms
    refused = httpx.post(f"{server.url}/classify", files={"image": ("x.png", b"not a photo")})
    assert refused.status_code == 400
    assert set(parse_server_timing(refused.headers["server-timing"])) == {"app"}


def _batch_histogram(server: ServedService) -> tuple[float, float]:
    text = httpx.get(f"{server.url}/metrics").text
    total = re.search(r"^kitchenware_batch_size_sum (\S+)$", text, re.M)
    count = re.search(r"^kitchenware_batch_size_count (\S+)$", text, re.M)
    return (float(total[1]) if total else 0.0, float(count[1]) if count else 0.0)


def test_metrics_count_labels_rejections_and_decode_time(server: ServedService) -> None:
    httpx.post(f"{server.url}/classify", files={"image": ("c.png", image_bytes((230, 20, 20)))})
    httpx.post(f"{server.url}/classify", files={"image": ("e.png", b"")})
    httpx.post(f"{server.url}/classify", json={})
    text = httpx.get(f"{server.url}/metrics").text
    assert re.search(r'^kitchenware_predictions_total\{label="cup"\} [1-9]', text, re.M)
    assert re.search(r'^kitchenware_rejected_uploads_total\{reason="empty"\} [1-9]', text, re.M)
    assert re.search(
        r'^kitchenware_rejected_uploads_total\{reason="not_multipart"\} [1-9]', text, re.M
    )
    assert re.search(r"^kitchenware_decode_seconds_count [1-9]", text, re.M)
    assert "bentoml_service_request_duration_seconds" in text  # BentoML's defaults stay


def test_health_endpoints(server: ServedService) -> None:
    assert httpx.get(f"{server.url}/livez").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    # While starting, /readyz refused connections or answered 503 promptly: never hung.
    probes = server.extra["readyz_probes"]
    assert isinstance(probes, list) and probes[-1] == "200"
    assert set(probes) <= {"refused", "503", "200"}, probes
    print(f"\ncold start to /readyz: {server.cold_start_s:.1f} s; probes: {probes}")


def test_server_still_answers_after_everything(server: ServedService) -> None:
    response = httpx.post(
        f"{server.url}/classify", files={"image": ("k.png", image_bytes((230, 20, 230)))}
    )
    assert response.status_code == 200 and response.json()["label"] == "knife"
    log = server.log()
    assert "status=500" not in log and "Traceback" not in log, log[-3000:]
