"""Schemathesis v4 over every endpoint of a real `bentoml serve`, bounded in time and examples.

`st run /docs.json` with the hooks in schemathesis_hooks.py (real photos, damaged photos
and random bytes in the file fields): no 5xx, no answer outside the documented schema or
content type, and real photos reach the model (200s) on both classify routes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from support.service import REPO, VENV_BIN, shared_server

pytestmark = pytest.mark.slow

MAX_TIME_S = 60
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


def test_schemathesis_finds_no_server_error_or_schema_break(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    server = shared_server(request, tmp_path_factory.getbasetemp())
    command = [
        str(VENV_BIN / "st"),
        "run",
        f"{server.url}/docs.json",
        "--phases=examples,coverage,fuzzing",
        f"--checks={CHECKS}",
        "--max-examples=30",
        f"--max-time={MAX_TIME_S}",
        "--workers=1",
        "--seed=13",
        # BentoML's generated task-state routes (status/get/retry/cancel/submit of
        # /classify_batch_async) answer bodies its own OpenAPI document does not describe
        # (ST108, found 2026-12-01, not yet fixed); the task route itself and every other
        # route stay under the schema check; tests/batch covers the task routes.
        "--exclude-path-regex=^/classify_batch_async/",
        "--generation-database=none",  # no .schemathesis/ left in tests/
        "--request-timeout=60",
        "--report=json,har",
        f"--report-dir={tmp_path}",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "serving.schemathesis_hooks"}
    run = subprocess.run(
        command,
        cwd=REPO / "tests",  # Schemathesis imports the hooks module relative to the cwd
        env=env,
        capture_output=True,
        text=True,
        timeout=MAX_TIME_S + 120,
    )
    report = json.loads(next(tmp_path.glob("json-*.json")).read_text())
    har = json.loads(next(tmp_path.glob("har-*.json")).read_text())
    statuses: Counter[tuple[str, int]] = Counter(
        (entry["request"]["url"].rsplit("/", 1)[-1], entry["response"]["status"])
        for entry in har["log"]["entries"]
    )
    print(f"schemathesis: {report['test_cases']}, answers {dict(statuses)}")
    assert run.returncode == 0 and not report["failures"] and not report["errors"], run.stdout[
        -4000:
    ]
    assert report["operations"]["tested"] >= 6
    assert report["test_cases"]["generated"] >= 100
    assert not [key for key in statuses if key[1] >= 500]
    assert statuses[("classify", 200)] > 0 and statuses[("classify_batch", 200)] > 0
