"""Start and stop the servers under test: `bentoml serve` and the naive Flask peer.

Each server runs in its own process group on a free 127.0.0.1 port, logs to a file under
bench/out/logs, and is stopped (SIGTERM, then SIGKILL after a grace period) on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from bench_assets import OUT_DIR, REPO_ROOT

LOG_DIR = OUT_DIR / "logs"
READY_TIMEOUT_S = 300.0  # cold start on a busy 2-core machine: imports + load + warm-up
STOP_GRACE_S = 20.0


@dataclass
class RunningServer:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_s: float  # seconds from spawn to the first ready answer


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, user + system CPU ticks) for every live process (Linux /proc)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process exited while we looked
            continue
        # After the ")" of the command name: state, ppid, ...; utime and stime are 11, 12.
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def _descendants(table: dict[int, tuple[int, int]], root_pid: int) -> set[int]:
    """root_pid and every live process below it (BentoML's workers leave its group)."""
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = {pid for pid, (ppid, _) in table.items() if ppid == parent} - tree
        tree |= children
        frontier.extend(children)
    return tree


def process_tree_cpu_s(root_pid: int) -> float:
    """CPU seconds used so far by a server and its workers.

    CPU time per image barely moves when other jobs share the cores, unlike wall time,
    so it is reported beside throughput on this shared machine.
    """
    table = _process_table()
    ticks = sum(table[pid][1] for pid in _descendants(table, root_pid) if pid in table)
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Server exited with code {process.returncode}:\n{tail}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready within {READY_TIMEOUT_S:.0f} s; see {log_path}.")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server we started: SIGTERM its group, then SIGKILL whatever of its tree is left."""
    if process.poll() is not None:
        return
    started_pids = _descendants(_process_table(), process.pid) - {process.pid}
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_GRACE_S)
    for pid in started_pids:  # workers that left the group and outlived the arbiter
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def running_server(
    name: str, command: list[str], port: int, ready_path: str, env: dict[str, str]
) -> Iterator[RunningServer]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    base_url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(process, base_url + ready_path, log_path)
        yield RunningServer(name, base_url, process, log_path, time.perf_counter() - started)
    finally:
        _stop(process)


def bentoml_command(port: int) -> list[str]:
    bentoml = Path(sys.executable).with_name("bentoml")
    return [
        str(bentoml),
        "serve",
        "service:Kitchenware",
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
) -> Iterator[RunningServer]:
    """`bentoml serve` of this project's service with KITCHENWARE_* overrides."""
    port = free_port()
    env = {
        "BENTOML_HOME": str(bentoml_home),
        "KITCHENWARE_MODEL_TAG": model_tag,
        "BENTOML_DO_NOT_TRACK": "True",
        **(settings_env or {}),
    }
    with running_server(name, bentoml_command(port), port, "/readyz", env) as server:
        yield server


@contextmanager
def running_peer(model_dir: Path) -> Iterator[RunningServer]:
    """The naive Flask peer on the same model files."""
    port = free_port()
    script = Path(__file__).resolve().parent / "naive_flask_server.py"
    command = [sys.executable, str(script), "--model-dir", str(model_dir), "--port", str(port)]
    with running_server("naive_flask", command, port, "/healthz", {}) as server:
        yield server
