"""Local servers for tests, benchmarks and the container smoke test: port, start, probe, stop.

One copy for tests/, bench/ and deploy/: a free loopback port, a subprocess in its own
process group that logs to a file, a readiness poll that says what each probe got, and a
stop that also ends the workers that left the group. Not shipped in the bento.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import psutil

PROBE_TIMEOUT_S = 8.0  # a readiness probe slower than this counts as hung
STOP_GRACE_S = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds) for every live process."""
    table = {}
    for process in psutil.process_iter(["ppid", "cpu_times"]):
        times = process.info["cpu_times"]
        if times is not None:  # None: the process exited or is not ours to read
            table[process.pid] = (process.info["ppid"], times.user + times.system)
    return table


def descendants(table: dict[int, tuple[int, float]], root_pid: int) -> set[int]:
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

    CPU time per image barely moves when other jobs share the cores, unlike wall time.
    """
    table = process_table()
    return sum(table[pid][1] for pid in descendants(table, root_pid) if pid in table)


def wait_ready(
    url: str,
    timeout: float,
    *,
    alive: Callable[[], str | None] = lambda: None,
    interval: float = 0.25,
) -> list[str]:
    """Poll `url` until it answers 200; returns what each probe got (status, "refused", "hung").

    `alive` returns why the server cannot answer any more (it exited), or None.
    """
    probes: list[str] = []
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=PROBE_TIMEOUT_S, trust_env=False) as client:
        while time.monotonic() < deadline:
            gone = alive()
            if gone is not None:
                raise RuntimeError(gone)
            try:
                status = client.get(url).status_code
            except httpx.TimeoutException:
                probes.append("hung")
            except httpx.TransportError:
                probes.append("refused")  # not listening yet
            else:
                probes.append(str(status))
                if status == 200:
                    return probes
            time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the server's process group, SIGKILL after `grace_s`, then any worker left."""
    if process.poll() is not None:
        return
    workers = descendants(process_table(), process.pid) - {process.pid}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
    for pid in workers:  # workers that left the group and outlived the arbiter
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running(
    command: Sequence[str],
    *,
    ready_url: str,
    log_path: Path,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
) -> Iterator[tuple[subprocess.Popen[bytes], list[str]]]:
    """Start `command` in its own process group, yield (process, probes) once `ready_url`
    answers 200, stop it on exit. A server that exits first raises with its log's tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive() -> str | None:
        if process.poll() is None:
            return None
        tail = log_path.read_text(errors="replace")[-4000:]
        return f"{command[0]} exited with {process.returncode}:\n{tail}"

    try:
        try:
            probes = wait_ready(ready_url, timeout, alive=alive)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; see {log_path}") from exc
        yield process, probes
    finally:
        stop(process)
