"""`bentoml serve` with an OpenVINO backend: runtime in answers and /metrics, no TensorFlow,
and by default no more inference threads than cores.

The colour model converted at import (fp32 IR + int8 IR + gate), imported into a store,
served by a real `bentoml serve`; the worker's memory map must hold no TensorFlow library.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.images import image_bytes
from support.service import build_colour_model, import_into_store, serve, store_env

from kitchenware.modelbuild.conversion import ImageSet, build_runtime_artifacts

pytestmark = pytest.mark.slow
SIZE = 32


def _descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = []
    for child in children.read_text().split() if children.is_file() else []:
        found += [int(child), *_descendants(int(child))]
    return found


def test_served_openvino_backend_reports_runtime_and_loads_no_tensorflow(tmp_path: Path) -> None:
    model_dir = build_colour_model(tmp_path / "model", image_size=SIZE)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (24, SIZE, SIZE, 3)).astype(np.float32)
    build_runtime_artifacts(model_dir, ImageSet(images), ImageSet(images), log=lambda m: None)
    home = tmp_path / "bentoml_home"
    tag = import_into_store(model_dir, home)
    env = store_env(home, model_tag=tag, backend="openvino-fp32")
    with serve("service:Kitchenware", env, log_dir=tmp_path) as server:
        red = image_bytes((230, 20, 20), "JPEG", size=(64, 48))
        single = httpx.post(f"{server.url}/classify", files={"image": ("r.jpg", red)})
        batch = httpx.post(f"{server.url}/classify_batch", files=[("images", ("r.jpg", red))] * 2)
        metrics = httpx.get(f"{server.url}/metrics").text
        maps = {
            pid: Path(f"/proc/{pid}/maps").read_text()
            for pid in _descendants(server.process.pid)
            if Path(f"/proc/{pid}/maps").exists()
        }
        log = server.log()
    assert single.status_code == 200, single.text
    assert single.json()["label"] == "cup" and single.json()["runtime"] == "openvino-fp32"
    assert batch.json()["runtime"] == "openvino-fp32"
    info = re.search(r"^kitchenware_runtime_info\{([^}]*)\} 1\.0$", metrics, re.M)
    assert info, metrics[-2000:]
    assert 'backend="openvino-fp32"' in info[1] and 'precision="f32"' in info[1]
    assert 'streams="1"' in info[1]
    assert "with backend openvino-fp32 (runtime=openvino 2026" in log
    workers = [pid for pid, text in maps.items() if "libopenvino" in text]
    assert workers, "no served process has OpenVINO loaded"
    for pid in workers:
        # OpenVINO's own libopenvino_tensorflow_frontend.so may be mapped; TensorFlow's
        # package (site-packages/tensorflow/, libtensorflow_framework.so) must not be.
        tensorflow = [
            line for line in maps[pid].splitlines() if "site-packages/tensorflow/" in line
        ]
        assert not tensorflow, f"worker {pid} mapped TensorFlow: {tensorflow[:3]}"
    # Shipped defaults: workers x OpenVINO threads <= cores; more made every photo cost more
    # CPU once clients spread over the workers (bench/RESULTS.md section 2).
    threads = re.search(r'threads="(\d+)"', info[1])
    assert threads, info[1]
    assert len(workers) * int(threads[1]) <= len(os.sched_getaffinity(0)), (workers, threads[1])
