"""The service as users meet it: `bentoml serve` in a subprocess, real HTTP from outside."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
from bentoml.exceptions import BentoMLException
from service_support import CLASS_COLOURS, ServedService, image_bytes, shared_server
from upload_catalogue import Case, catalogue

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


def test_served_probabilities_equal_in_process_prediction(server: ServedService) -> None:
    from kitchenware.core.inference import Classifier
    from kitchenware.core.preprocessing import preprocess_bytes

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
