"""Two instances on one machine and one BENTOML_HOME (`make serve` next to `make serve
MODEL=demo PORT=3001`, blue/green on one host): both start and serve, and each keeps its own
async-task results and its own metrics when the other starts (issue 18).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.batch import colour_of
from support.images import image_bytes
from support.service import import_into_store, serve, shared_model_dir, store_env

from kitchenware.serving.instancedir import (
    INSTANCES,
    LOCK,
    STARTING,
    claim_instance_dir,
    is_held,
)

TASK = "/classify_batch_async"


def predictions(client: httpx.Client, label: str) -> float:
    """kitchenware_predictions_total{label} in this instance's /metrics (0 when absent)."""
    line = rf'^kitchenware_predictions_total\{{label="{label}"\}} (\S+)$'
    found = re.search(line, client.get("/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def prediction_lines(client: httpx.Client) -> list[str]:
    text = client.get("/metrics").text
    return [line for line in text.splitlines() if line.startswith("kitchenware_predictions")]


def classify(client: httpx.Client, label: str) -> None:
    photo = image_bytes(colour_of(label), fmt="PNG")
    answer = client.post("/classify", files={"image": ("p.png", photo, "image/png")})
    assert answer.status_code == 200 and answer.json()["label"] == label, answer.text


def finished_task(client: httpx.Client, label: str) -> str:
    photo = image_bytes(colour_of(label), fmt="PNG")
    answer = client.post(f"{TASK}/submit", files=[("images", ("t.png", photo, "image/png"))])
    assert answer.status_code == 200, answer.text
    task_id = str(answer.json()["task_id"])
    deadline = time.monotonic() + 60
    while client.get(f"{TASK}/status", params={"task_id": task_id}).json()["status"] in (
        "pending",
        "in_progress",
    ):
        assert time.monotonic() < deadline, "task still running after 60 s"
        time.sleep(0.2)
    return task_id


def task_result(client: httpx.Client, task_id: str) -> tuple[int, Any]:
    answer = client.get(f"{TASK}/get", params={"task_id": task_id})
    return answer.status_code, answer.json()


@pytest.mark.slow
def test_two_instances_on_one_home_keep_their_own_tasks_and_metrics(tmp_path: Path) -> None:
    home = tmp_path / "bentoml_home"
    import_into_store(shared_model_dir(tmp_path), home)
    # One worker each: two servers share 2 cores.
    env = store_env(home, monitoring_dir=tmp_path / "monitoring", workers="1")
    with (
        serve("service:Kitchenware", env, log_dir=tmp_path) as first,
        httpx.Client(base_url=first.url, timeout=60) as a,
    ):
        task_a = finished_task(a, "cup")
        classify(a, "cup")
        with (
            serve("service:Kitchenware", env, log_dir=tmp_path) as second,
            httpx.Client(base_url=second.url, timeout=60) as b,
        ):
            classify(a, "cup")  # A keeps serving and counting after B started
            classify(b, "plate")
            task_b = finished_task(b, "fork")

            status, body = task_result(a, task_a)
            assert status == 200, (body, first.log()[-3000:])
            assert [r["label"] for r in body["results"]] == ["cup"]
            assert task_result(b, task_b)[1]["results"][0]["label"] == "fork"
            assert task_result(b, task_a)[0] == 404  # B's store is its own
            assert task_result(a, task_b)[0] == 404

            # The task's image and two /classify: A's own count, B's untouched by A's.
            assert predictions(a, "cup") == 3, prediction_lines(a)
            assert predictions(a, "plate") == 0
            assert predictions(b, "cup") == 0
            assert predictions(b, "plate") == 1
        classify(a, "cup")  # B's exit takes nothing of A's with it
        assert predictions(a, "cup") == 4
        assert task_result(a, task_a)[0] == 200


def test_a_start_removes_the_folders_of_servers_that_ended_and_no_other(tmp_path: Path) -> None:
    root = tmp_path / INSTANCES
    running = claim_instance_dir(root, 3000)
    # A server killed with SIGKILL: its folder stays, its lock goes with the process.
    code = (
        "import sys, time; from pathlib import Path; "
        "from kitchenware.serving.instancedir import claim_instance_dir; "
        "print(claim_instance_dir(Path(sys.argv[1]), 3001), flush=True); time.sleep(60)"
    )
    killed = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE)
    assert killed.stdout is not None
    killed_folder = Path(killed.stdout.readline().decode().strip())
    assert is_held(killed_folder / LOCK)
    killed.kill()
    killed.wait()
    assert not is_held(killed_folder / LOCK)

    starting = Path(tempfile.mkdtemp(prefix=STARTING, dir=root))  # another start, just begun
    newer = claim_instance_dir(root, 3001)
    assert sorted(root.iterdir()) == sorted([running, newer, starting])
    assert newer.name.startswith("3001-") and newer != killed_folder
