"""The Swagger UI at / in a real headless browser (Debian's chromium driven by Playwright):
both endpoints are listed and "Try it out" classifies uploaded files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.browser import CHROMIUM, CHROMIUM_ARGS
from support.images import image_bytes
from support.service import ServedService, shared_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ServedService:
    return shared_server(request, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(
            f"{CHROMIUM} is missing: run deploy/system-packages.sh as root (make test does)."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def try_it_out(page: Any, api: str, files: list[Path]) -> tuple[str, dict[str, Any]]:
    """Open an operation, upload `files` through its form, execute; returns (status, body)."""
    operation = page.locator(f"#operations-Service_APIs-kitchenware__{api}")
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    if len(files) > 1 or api == "classify_batch":
        for _ in files:  # an array of files: one "Add item" per file
            operation.get_by_role("button", name="Add string item").click()
    inputs = operation.locator("input[type=file]")
    for index, path in enumerate(files):
        inputs.nth(index).set_input_files(str(path))
    operation.locator(".execute").click()
    row = operation.locator(".live-responses-table tbody tr.response").first
    row.wait_for(timeout=60_000)
    status = row.locator(".response-col_status").inner_text().strip()
    body = row.locator(".microlight").first.inner_text()
    return status, json.loads(body)


def test_swagger_ui_lists_both_endpoints_and_try_it_out_works(
    server: ServedService, page: Any, tmp_path: Path
) -> None:
    page.goto(server.url + "/", wait_until="domcontentloaded")
    page.wait_for_selector(".opblock-summary-path", timeout=60_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/classify" in paths and "/classify_batch" in paths

    cup, plate = tmp_path / "cup.png", tmp_path / "plate.jpg"
    cup.write_bytes(image_bytes((230, 20, 20)))
    plate.write_bytes(image_bytes((20, 20, 230), "JPEG"))

    status, body = try_it_out(page, "classify", [cup])
    assert status == "200" and body["label"] == "cup"
    status, body = try_it_out(page, "classify_batch", [plate, cup])
    assert status == "200"
    assert [r["label"] for r in body["results"]] == ["plate", "cup"]


def test_the_swagger_page_is_this_services_own_and_offline(
    server: ServedService, page: Any, tmp_path: Path
) -> None:
    """Title, version, what it classifies, model and backend, a curl example, links to /ui
    and the README; nothing fetched from outside (the BentoML template has a tag manager,
    badges and Slack links)."""
    from support.browser import refuse_external

    from kitchenware import __version__

    external = refuse_external(page.context)  # the module's browser: loopback only now
    page.goto(server.url + "/", wait_until="networkidle")
    page.wait_for_selector(".info .title", timeout=60_000)
    title = page.inner_text(".info .title")
    info = page.inner_text(".info")
    page.screenshot(path=str(tmp_path / "swagger.png"), full_page=True)
    assert "Kitchenware classifier" in title and __version__ in title, title
    assert "None" not in title and "kitchenware:dev" not in info
    for words in ("cup", "knife", "Model:", str(server.extra["tag"]), "Backend:", "curl -F"):
        assert words in info, (words, info)
    assert "BentoML" not in info and "Slack" not in info
    links = page.eval_on_selector_all(".info a", "els => els.map(e => e.getAttribute('href'))")
    assert "./ui/" in links and any(str(link).startswith("./ui/readme#") for link in links)
    assert "/ui" not in [p for p in page.locator(".opblock-summary-path").all_inner_texts()]
    assert page.title().startswith("Kitchenware classifier")
    page.goto(server.url + "/ui/readme#documentation", wait_until="networkidle")
    page.wait_for_selector("#documentation", timeout=30_000)
    assert external == [], external
