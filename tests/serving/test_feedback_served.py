"""The feedback loop over real HTTP (`bentoml serve`, loopback, the colour model, a SQLite
store in a temp folder): request ids on every answer, /feedback with its bad inputs
(clear 4xx, nothing stored), /explain, the prediction log, /ui."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from support.images import image_bytes
from support.service import (
    REPO,
    ServedService,
    import_into_store,
    serve,
    shared_model_dir,
    store_env,
)

from kitchenware.serving.feedback.store import FeedbackStore

pytestmark = [pytest.mark.slow]
SERVICE_DIR = REPO  # service.py of this checkout


def loop_env(home: Path, store_dir: Path) -> dict[str, str]:
    return store_env(
        home,
        feedback_url=f"sqlite:///{store_dir / 'feedback.db'}",
        max_upload_bytes="3000000",
        monitoring_dir=store_dir / "monitoring",
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedService]:
    base = tmp_path_factory.mktemp("loop")
    home = base / "home"
    import_into_store(shared_model_dir(tmp_path_factory.getbasetemp()), home)
    env = loop_env(home, base / "store")
    with serve("service:Kitchenware", env, cwd=SERVICE_DIR, log_dir=base) as served:
        served.extra["store_dir"] = base / "store"
        yield served


@pytest.fixture
def store(server: ServedService) -> Iterator[FeedbackStore]:
    opened = FeedbackStore(f"sqlite:///{Path(str(server.extra['store_dir'])) / 'feedback.db'}")
    yield opened
    opened.close()


def classify(server: ServedService, data: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/classify", files={"image": ("photo.png", data)}, headers=headers, timeout=60
    )


def form(**fields: str) -> dict[str, tuple[str | None, str | bytes]]:
    """Text fields as multipart parts (what curl -F and the page's FormData send)."""
    return {name: (None, value) for name, value in fields.items()}


def feedback(
    server: ServedService,
    upload: tuple[str, bytes] | None = None,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    files = form(**fields)
    if upload is not None:
        files["image"] = upload
    return httpx.post(f"{server.url}/feedback", files=files, headers=headers, timeout=30)


def test_every_answer_carries_a_request_id(server: ServedService) -> None:
    ok = classify(server, image_bytes((230, 20, 20)))
    assert ok.status_code == 200 and ok.json()["label"] == "cup"
    assert ok.json()["request_id"] == ok.headers["x-request-id"]
    kept = classify(server, image_bytes((230, 20, 20)), **{"X-Request-ID": "client-42.a_b:c"})
    assert kept.headers["x-request-id"] == kept.json()["request_id"] == "client-42.a_b:c"
    odd = classify(server, image_bytes((230, 20, 20)), **{"X-Request-ID": "bad id\twith spaces"})
    assert (
        odd.headers["x-request-id"] != "bad id\twith spaces" and len(odd.json()["request_id"]) == 32
    )
    refused = httpx.post(f"{server.url}/classify", json={"image": "x"}, timeout=30)  # upload gate
    assert refused.status_code == 400
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    undecodable = classify(server, b"hello, not an image")
    assert undecodable.status_code == 400 and undecodable.json()["request_id"]
    time.sleep(0.5)
    assert "request_id=client-42.a_b:c" in server.log()


def test_a_correction_by_request_id_is_stored_and_joins_the_log(
    server: ServedService, store: FeedbackStore
) -> None:
    photo = image_bytes((20, 20, 230), "JPEG", size=(50, 40))
    answer = classify(server, photo).json()
    sent = feedback(server, label="glass", request_id=answer["request_id"], note="a blue glass")
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert body["label"] == "glass" and body["predicted_label"] == answer["label"] == "plate"
    assert body["prediction_request_id"] == answer["request_id"]
    assert body["request_id"] == sent.headers["x-request-id"] != answer["request_id"]
    [record] = [r for r in store.feedback_records() if r.id == body["feedback_id"]]
    assert record.note == "a blue glass" and record.request_id == answer["request_id"]
    assert store.image_path(record.image_sha256, record.image_ext).read_bytes() == photo
    lines = [
        json.loads(line)
        for path in Path(str(server.extra["store_dir"]), "monitoring").rglob("*.log")
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    [logged] = [x for x in lines if x.get("kitchenware_request_id") == answer["request_id"]]
    assert logged["label"] == "plate" and (logged["width"], logged["height"]) == (50, 40)
    assert logged["model"] == answer["model"] and json.loads(logged["probabilities"])


def test_a_correction_with_the_photo_itself(server: ServedService, store: FeedbackStore) -> None:
    photo = image_bytes((20, 230, 20), "PNG", size=(33, 44))
    sent = feedback(server, ("g.png", photo), label="glass")
    assert sent.status_code == 200, sent.text
    assert sent.json()["predicted_label"] is None


BAD = [
    ({"label": "bowl", "request_id": "{rid}"}, None, 400, "unknown_label"),
    ({"label": "cup", "request_id": "never-seen"}, None, 404, "unknown_request_id"),
    ({"label": "cup", "request_id": "{rid}", "note": "x" * 501}, None, 400, "note_too_long"),
    ({"label": "cup"}, ("notes.txt", b"just some text\n"), 400, "not_an_image"),
    ({"label": "cup"}, ("doc.pdf", b"%PDF-1.7\n" + b"0" * 100), 400, "not_an_image"),
    ({"label": "cup"}, None, 400, "missing_subject"),
    ({"label": "cup"}, ("big.png", b"0" * 3_100_000), 413, "too_large"),
]


@pytest.mark.parametrize(("data", "upload", "status", "reason"), BAD)
def test_bad_feedback_is_a_clear_4xx_and_stores_nothing(
    server: ServedService,
    store: FeedbackStore,
    data: dict[str, str],
    upload: tuple[str, bytes] | None,
    status: int,
    reason: str,
) -> None:
    rid = classify(server, image_bytes((200, 200, 20))).json()["request_id"]
    before = store.counts()["feedback"]
    fields = {k: v.replace("{rid}", rid) for k, v in data.items()}
    request_id = f"feedback-{reason}"
    answer = feedback(server, upload, {"X-Request-ID": request_id}, **fields)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["reason"] == reason and body["error"].endswith((".", ")"))
    # The refusal names this request (not the corrected one's id, not none), header and body.
    assert body["request_id"] == answer.headers["x-request-id"] == request_id
    assert store.counts()["feedback"] == before


def test_a_duplicate_correction_is_409(server: ServedService, store: FeedbackStore) -> None:
    rid = classify(server, image_bytes((200, 20, 200))).json()["request_id"]
    first = feedback(server, label="cup", request_id=rid)
    assert first.status_code == 200
    before = store.counts()["feedback"]
    again = feedback(server, None, {"X-Request-ID": "repeat-1"}, label="fork", request_id=rid)
    assert again.status_code == 409 and again.json()["feedback_id"] == first.json()["feedback_id"]
    assert again.json()["request_id"] == "repeat-1"
    assert store.counts()["feedback"] == before


def test_explain_returns_a_png_overlay_at_the_photo_size(server: ServedService) -> None:
    photo = image_bytes((230, 20, 20), "JPEG", size=(120, 90))
    answer = httpx.post(f"{server.url}/explain", files={"image": ("c.jpg", photo)}, timeout=120)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["label"], body["method"], body["width"], body["height"]) == (
        "cup",
        "gradcam",
        120,
        90,
    )
    for key in ("overlay_png", "heatmap_png"):
        image = Image.open(io.BytesIO(base64.b64decode(body[key])))
        assert image.format == "PNG" and image.size == (120, 90)
    other = httpx.post(
        f"{server.url}/explain",
        files={"image": ("c.jpg", photo), **form(label="plate", method="occlusion")},
        timeout=120,
    ).json()
    assert (other["label"], other["method"]) == ("plate", "occlusion")
    text = httpx.post(
        f"{server.url}/explain", files={"image": ("n.txt", b"not an image")}, timeout=30
    )
    assert text.status_code == 400 and "not an image" in text.json()["error"]
    wrong = httpx.post(
        f"{server.url}/explain", files={"image": ("c.jpg", photo), **form(label="bowl")}
    )
    assert wrong.status_code == 400 and "cup" in wrong.json()["error"]


def test_the_upload_page_is_served_offline(server: ServedService) -> None:
    page = httpx.get(f"{server.url}/ui", follow_redirects=True, timeout=30)
    assert page.status_code == 200 and "Kitchenware classifier" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("ui.js", "ui.css", "info.json", "readme.html", "readme", "README.md"):
        assert httpx.get(f"{server.url}/ui/{asset}", timeout=30).status_code == 200
    assert httpx.get(f"{server.url}/ui/info.json").json()["backend"] == "tensorflow"
