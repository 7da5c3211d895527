"""The upload page at /ui in headless chromium, against the default (published Xception)
model: pick a real photo, see its label and a bar per class, send a correction and see
the confirmation, toggle the heatmap, upload a text file and see the API's sentence.
Screenshots go to the test's folder (printed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.browser import offline_page
from support.real_model import real_model_home
from support.service import REPO, ServedService, serve, store_env

from kitchenware.serving.feedback.store import FeedbackStore

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SERVICE_DIR = REPO  # service.py of this checkout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedService]:
    home, _ = real_model_home(tmp_path_factory.getbasetemp())
    base = tmp_path_factory.mktemp("ui")
    env = store_env(
        home,
        default_model=True,
        monitoring_dir=base / "monitoring",
        feedback_url=f"sqlite:///{base / 'store' / 'feedback.db'}",
    )
    with serve("service:Kitchenware", env, cwd=SERVICE_DIR, log_dir=base) as served:
        served.extra["db"] = base / "store" / "feedback.db"
        yield served


def test_classify_correct_and_explain_a_real_photo(
    server: ServedService, real_photos: Any, tmp_path: Path
) -> None:
    photo = real_photos.path("0013")  # a knife
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n")
    with offline_page(tmp_path / "profile") as (page, external):
        page.goto(f"{server.url}/ui", wait_until="networkidle")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        assert page.inner_text("#label") == "knife"
        bars = page.locator("#bars li")
        assert bars.count() == 6
        assert bars.first.get_attribute("data-label") == "knife"
        assert "ms" in page.inner_text("#latency") and page.inner_text("#model")
        page.screenshot(path=str(tmp_path / "1-classified.png"), full_page=True)

        page.select_option("#correct-label", "fork")
        page.fill("#note", "testing the loop")
        page.click("#send-feedback")
        page.wait_for_selector("#feedback-status:not([hidden])", timeout=30_000)
        status = page.inner_text("#feedback-status")
        assert "Thank you" in status and "fork" in status, status
        page.screenshot(path=str(tmp_path / "2-corrected.png"), full_page=True)

        page.check("#heatmap-toggle")
        page.wait_for_selector("#heatmap:not([hidden])", timeout=120_000)
        info = page.inner_text("#heatmap-info")
        assert "knife" in info and ("gradcam" in info or "occlusion" in info), info
        size = page.evaluate("[heatmap.naturalWidth, heatmap.naturalHeight]")
        natural = page.evaluate("[photo.naturalWidth, photo.naturalHeight]")
        assert size == natural  # the overlay is at the photo's own size
        page.screenshot(path=str(tmp_path / "3-heatmap.png"), full_page=True)

        page.set_input_files("#file", str(text))
        page.wait_for_selector("#error:not([hidden])", timeout=30_000)
        error = page.inner_text("#error")
        assert "not an image" in error and "notes.txt" in error, error
        # The old answer and its heatmap go away (CSS display rules once kept them shown).
        assert not page.is_visible("#result") and not page.is_visible("#heatmap")
        page.screenshot(path=str(tmp_path / "4-text-file.png"), full_page=True)
        assert external == [], external
    store = FeedbackStore(f"sqlite:///{server.extra['db']}")
    try:
        [record] = store.feedback_records()
        assert (record.label, record.predicted_label) == ("fork", "knife")
        assert record.note == "testing the loop"
    finally:
        store.close()
    print(f"\nscreenshots: {tmp_path}")
