"""API keys, CORS and client file names through a real `bentoml serve` (two workers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.service import (
    REPO,
    ServedService,
    build_colour_model,
    import_into_store,
    serve,
    store_env,
)

pytestmark = pytest.mark.slow
KEYS = ["k" * 24 + "-current", "r" * 24 + "-rotated"]
ORIGIN = "https://app.example.com"
PHOTO = (REPO / "examples" / "cup.jpg").read_bytes()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedService]:
    base = tmp_path_factory.mktemp("secured")
    home = base / "bentoml_home"
    tag = import_into_store(build_colour_model(base / "model"), home)
    env = store_env(
        home, model_tag=tag, api_keys=",".join(KEYS), cors_allowed_origins=ORIGIN, workers="2"
    )
    with serve("service:Kitchenware", env, log_dir=base) as server:
        yield server


def classify(server: ServedService, name: str = "cup.jpg", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/classify", files={"image": (name, PHOTO)}, headers=headers, timeout=60
    )


def test_keys_are_required_except_on_probes_and_metrics(secured: ServedService) -> None:
    refused = classify(secured)
    assert refused.status_code == 401
    assert "requires an API key" in refused.json()["error"]
    assert classify(secured, Authorization="Bearer wrong-key-of-some-length").status_code == 401
    for key in KEYS:
        assert classify(secured, Authorization=f"Bearer {key}").status_code == 200
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{secured.url}{path}", timeout=10).status_code == 200
    assert httpx.get(f"{secured.url}/docs.json", timeout=10).status_code == 401
    lines = [line for line in secured.log().splitlines() if "API keys on: 2 key(s)" in line]
    assert len(lines) == 1, lines  # one start-up line, not one per worker


def test_cors_answers_the_allowed_origin_only(secured: ServedService) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = httpx.options(
        f"{secured.url}/classify", headers={"Origin": ORIGIN, **preflight}, timeout=10
    )
    other = httpx.options(
        f"{secured.url}/classify",
        headers={"Origin": "https://evil.example", **preflight},
        timeout=10,
    )
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("name", ["../../etc/passwd", "a\x00b.jpg", "x" * 300 + ".jpg"])
def test_hostile_file_names_are_answered_not_used(secured: ServedService, name: str) -> None:
    """A 300-character name answered 500 (BentoML used it as its temp file's suffix)."""
    answer = classify(secured, name, Authorization=f"Bearer {KEYS[0]}")
    assert answer.status_code == 200, answer.text
    assert not Path("/etc/passwd.jpg").exists()


def test_the_default_is_open_with_a_loud_line(tmp_path: Path) -> None:
    home = tmp_path / "bentoml_home"
    tag = import_into_store(build_colour_model(tmp_path / "model"), home)
    with serve("service:Kitchenware", store_env(home, model_tag=tag), log_dir=tmp_path) as server:
        assert classify(server).status_code == 200
        preflight = httpx.options(
            f"{server.url}/classify",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
            timeout=10,
        )
        log = server.log()
    assert "access-control-allow-origin" not in preflight.headers
    assert log.count("API KEYS OFF") == 1
