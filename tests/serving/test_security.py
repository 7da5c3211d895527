"""The security middlewares on their own: API keys, CORS, and client file names.

Each middleware wraps a small real ASGI app and is driven over Starlette's TestClient, so
these run in milliseconds; test_service_security.py checks the same behaviour through a
real `bentoml serve`.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kitchenware.serving.http.auth import ApiKeyGate, check_keys, key_matches, startup_line
from kitchenware.serving.http.cors import check_origins, with_cors
from kitchenware.serving.http.uploads import UPLOAD_NAMES_SCOPE_KEY, FileField, UploadGate

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

KEY_A = "a" * 20 + "-first-key"
KEY_B = "b" * 20 + "-rotated-key"
SEEN: dict[str, Any] = {}


async def echo(request: Request) -> JSONResponse:
    """What the app behind the middlewares received."""
    body = await request.body()
    form = await request.form() if request.method == "POST" else None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)] if form else []
    SEEN.update(
        body=body,
        names=request.scope.get(UPLOAD_NAMES_SCOPE_KEY),
        form_filenames=[f.filename for f in files],
        form_sizes=[f.size for f in files],
    )
    if form:
        await form.close()
    return JSONResponse({"ok": True})


APP = Starlette(
    routes=[
        Route(path, echo, methods=["GET", "POST"])
        for path in ("/classify", "/classify_batch", "/livez", "/readyz", "/metrics", "/docs.json")
    ]
)


def gated(keys: list[str]) -> TestClient:
    return TestClient(ApiKeyGate(APP, keys=keys))


# --- API keys ---------------------------------------------------------------------------


def test_no_keys_means_open_and_a_loud_line() -> None:
    client = gated([])
    assert client.post("/classify").status_code == 200
    assert "API KEYS OFF" in startup_line(())


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
def test_probes_and_metrics_stay_open(path: str) -> None:
    assert gated([KEY_A]).get(path).status_code == 200


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "requires an API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "must be 'Bearer <key>'"),
        ({"Authorization": "Bearer "}, "must be 'Bearer <key>'"),
        ({"Authorization": f"Bearer {KEY_A}x"}, "not valid"),
        ({"Authorization": f"Bearer {KEY_A[:-1]}"}, "not valid"),
    ],
)
def test_missing_or_wrong_key_is_401_with_a_sentence(headers: dict[str, str], words: str) -> None:
    response = gated([KEY_A, KEY_B]).post("/classify", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["reason"] == "unauthorized" and words in body["error"]
    assert body["error"].endswith(".")
    assert "ok" not in body


@pytest.mark.parametrize("key", [KEY_A, KEY_B])
def test_every_configured_key_is_accepted_for_rotation(key: str) -> None:
    client = gated([KEY_A, KEY_B])
    for path in ("/classify", "/docs.json"):
        assert client.post(path, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.post("/classify", headers={"authorization": f"bearer {key}"}).status_code == 200


def test_keys_come_stripped_and_short_ones_are_refused() -> None:
    assert check_keys([f" {KEY_A} ", "", KEY_B]) == (KEY_A, KEY_B)
    with pytest.raises(ValueError, match="entry 2 has 5 characters"):
        check_keys([KEY_A, "short"])


def test_compare_checks_every_key_in_constant_time() -> None:
    keys = (KEY_A.encode(), KEY_B.encode())
    assert key_matches(KEY_B.encode(), keys) and not key_matches(b"x" * 30, keys)

    # A guess sharing a long prefix with a key takes as long as one sharing nothing.
    def timed(guess: bytes) -> float:
        started = time.perf_counter()
        for _ in range(4000):
            key_matches(guess, keys)
        return time.perf_counter() - started

    near, far = KEY_A[:-1].encode() + b"!", b"!" * len(KEY_A)
    # The median ratio of many short interleaved pairs: a pause of the machine spoils a pair
    # or two, not the median (5 long separate rounds failed under load).
    ratios = sorted(timed(near) / timed(far) for _ in range(31))
    assert 0.7 < ratios[15] < 1.4, ratios


# --- CORS ----------------------------------------------------------------------------------


def test_cors_is_off_by_default() -> None:
    client = TestClient(with_cors(APP, []))
    response = client.get("/readyz", headers={"Origin": "https://evil.example"})
    assert not [h for h in response.headers if h.startswith("access-control-")]
    preflight = client.options(
        "/classify",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_listed_origins() -> None:
    client = TestClient(with_cors(APP, ["https://app.example.com"]))
    preflight = client.options(
        "/classify",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    other = client.get("/readyz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    allowed = client.get("/readyz", headers={"Origin": "https://app.example.com"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()


def test_preflight_passes_the_key_gate_but_the_request_does_not() -> None:
    client = TestClient(with_cors(ApiKeyGate(APP, keys=[KEY_A]), ["https://app.example.com"]))
    headers = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    assert client.options("/classify", headers=headers).status_code == 200
    refused = client.post("/classify", headers={"Origin": "https://app.example.com"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://app.example.com"


def test_cors_origins_are_checked() -> None:
    assert check_origins([" https://a.example/ ", "*"]) == ("https://a.example", "*")
    with pytest.raises(ValueError, match="not an origin"):
        check_origins(["app.example.com"])
    with pytest.raises(ValueError, match="not an origin"):
        check_origins(["https://app.example.com/path"])


# --- client file names ---------------------------------------------------------------------

HOSTILE_NAMES = [
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/shadow",
    "a\x00b.jpg",
    "photo.jpg\x00.sh",
    "x" * 300 + ".jpg",
    "é" * 200,
    "..",
    'quote"semi;colon.jpg',
    "line\r\nbreak.jpg",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_client_file_names_never_reach_the_app_that_writes_files(name: str) -> None:
    gate = UploadGate(
        APP, routes={"/classify": FileField("image", max_files=1)}, max_upload_bytes=10**6
    )
    data = b"\xff\xd8 not really a jpeg \x00" * 100
    response = TestClient(gate).post("/classify", files={"image": (name, data, "image/jpeg")})
    assert response.status_code == 200
    assert SEEN["form_filenames"] == ["upload"]  # what BentoML would use for its temp file
    assert SEEN["form_sizes"] == [len(data)]  # the file's bytes arrive unchanged
    assert b"passwd" not in SEEN["body"] and b"x" * 300 not in SEEN["body"]
    assert SEEN["names"] is not None and len(SEEN["names"]) == 1  # kept for messages


def test_replayed_batch_keeps_every_file_and_its_order() -> None:
    gate = UploadGate(
        APP, routes={"/classify_batch": FileField("images", max_files=4)}, max_upload_bytes=10**6
    )
    files = [("images", (f"../{i}.jpg", bytes([i]) * (100 + i), "image/jpeg")) for i in range(3)]
    assert TestClient(gate).post("/classify_batch", files=files).status_code == 200
    assert SEEN["form_sizes"] == [100, 101, 102]
    assert SEEN["names"] == ["../0.jpg", "../1.jpg", "../2.jpg"]
