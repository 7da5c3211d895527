"""Start and stop the servers under test: `bentoml serve`, the LitServe peer, the Flask peer.

Each server runs in its own process group on a free 127.0.0.1 port, logs to a file under
bench/out/logs, and is stopped on exit (kitchenware.localserver does the work).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench_assets import OUT_DIR, REPO_ROOT

from kitchenware.localserver import free_port, running

LOG_DIR = OUT_DIR / "logs"
READY_TIMEOUT_S = 300.0  # cold start on a busy 2-core machine: imports + load + warm-up


@dataclass
class RunningServer:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_s: float  # seconds from spawn to the first ready answer


@contextmanager
def running_server(
    name: str, command: list[str], port: int, ready_path: str, env: dict[str, str]
) -> Iterator[RunningServer]:
    base_url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with running(
        command,
        ready_url=base_url + ready_path,
        log_path=LOG_DIR / f"{name}.log",
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        timeout=READY_TIMEOUT_S,
    ) as (process, _):
        ready_s = time.perf_counter() - started
        yield RunningServer(name, base_url, process, LOG_DIR / f"{name}.log", ready_s)


def bentoml_command(port: int, target: str = "service:Kitchenware") -> list[str]:
    bentoml = Path(sys.executable).with_name("bentoml")
    return [
        str(bentoml),
        "serve",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


@contextmanager
def running_service(
    model_tag: str,
    bentoml_home: Path,
    settings_env: dict[str, str] | None = None,
    name: str = "service",
    target: str = "service:Kitchenware",
) -> Iterator[RunningServer]:
    """`bentoml serve` of this project's service with KITCHENWARE_* overrides."""
    port = free_port()
    env = {
        "BENTOML_HOME": str(bentoml_home),
        "KITCHENWARE_MODEL_TAG": model_tag,
        "BENTOML_DO_NOT_TRACK": "True",
        **(settings_env or {}),
    }
    with running_server(name, bentoml_command(port, target), port, "/readyz", env) as server:
        yield server


@contextmanager
def running_peer(model_dir: Path) -> Iterator[RunningServer]:
    """The naive Flask peer on the same model files."""
    port = free_port()
    script = Path(__file__).resolve().parent / "naive_flask_server.py"
    command = [sys.executable, str(script), "--model-dir", str(model_dir), "--port", str(port)]
    with running_server("naive_flask", command, port, "/healthz", {}) as server:
        yield server


@contextmanager
def running_litserve(model_dir: Path, backend: str) -> Iterator[RunningServer]:
    """The LitServe peer on the same IR as `backend`; /health turns 200 once it is set up."""
    port = free_port()
    script = Path(__file__).resolve().parent / "litserve_peer.py"
    command = [sys.executable, str(script), "--model-dir", str(model_dir), "--port", str(port)]
    with running_server("litserve", [*command, "--backend", backend], port, "/health", {}) as srv:
        yield srv
