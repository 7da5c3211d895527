"""Headless Debian chromium through Playwright, offline: every request that leaves
127.0.0.1 is refused and recorded, so a test can assert a page needs no internet."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

CHROMIUM = "/usr/bin/chromium"
# Headless as root on these machines; without the networking flags chromium keeps trying
# to reach the internet and fails (see ../shared/notes/machine-facts.md).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def refuse_external(context: Any) -> list[str]:
    """Route every request of a browser context: loopback goes on, the rest is refused and
    its URL recorded in the returned list."""
    external: list[str] = []

    def guard(route: Any) -> None:
        url = route.request.url
        host = urlparse(url).hostname or ""
        if url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            route.continue_()
        else:
            external.append(url)
            route.abort()

    context.route("**/*", guard)
    return external


@contextlib.contextmanager
def offline_page(profile: Path) -> Iterator[tuple[Any, list[str]]]:
    """(page, external) where `external` collects every refused non-loopback URL."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} is missing: run deploy/system-packages.sh as root.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            external = refuse_external(context)
            yield context.new_page(), external
        finally:
            context.close()
