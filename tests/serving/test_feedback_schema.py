"""Several workers open a new store at once (`KITCHENWARE_WORKERS=2`): the schema is
created once, no worker fails. Before the fix, one of two concurrent CREATE TABLEs on
PostgreSQL failed with a UniqueViolation in pg_type and that worker's /feedback was 503."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.postgres import postgres_server

from kitchenware.serving.feedback.store import FeedbackStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'feedback.db'}"
        return
    with postgres_server() as url:
        yield url


def test_concurrent_openers_of_a_new_store_all_succeed(fresh_url: str, tmp_path: Path) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_store() -> None:
        start.wait()
        try:
            FeedbackStore(fresh_url, tmp_path / "images").close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
