"""Cold start of the service, phase by phase: exec of `bentoml serve` (or `podman run`) to
the first /readyz 200, split by the server's own log lines.

Every line the server prints is stamped (seconds since exec) as it arrives, so one run says
when the CLI had imported the service ("Starting production"), when each worker had
imported it and built the service ("Service kitchenware initialized"), when its start-up
check ended and when it served (after warm-up). Variants run interleaved, round by round,
so they see the same background load; the load average is printed per run.

    .venv/bin/python bench/cold_start.py --runs 3 --variant two: --variant one:KITCHENWARE_WORKERS=1
    .venv/bin/python bench/cold_start.py --runs 2 --container kitchenware-classifier:latest
    .venv/bin/python bench/cold_start.py --variant main:REPO=/work/main --variant here:

REPO=DIR in a variant serves DIR's checkout with DIR/.venv (before/after on one machine);
IMAGE=NAME runs that image (with --container, two images interleave).

The model comes from $BENTOML_HOME (`make serve` imports it); KITCHENWARE_MODEL_TAG as usual.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
POLL_S = 0.05
TIMEOUT_S = 300.0
# (phase name, pattern of the log line that ends it); the first match per worker counts.
MARKS = (
    ("cli", re.compile(r"Starting production")),
    ("initialized", re.compile(r"Service \S+ initialized")),
    ("checked", re.compile(r"start-up check on this CPU")),
    ("served", re.compile(r"serving \S+ with backend")),
)
WORKER = re.compile(r"\[entry_service:[^:\]]+:(\d+)\]")
NUMBERS = re.compile(r"(load_seconds|warm_up_seconds)=([0-9.]+)|startup_check=\w+ in ([0-9.]+) s")


@dataclass
class Run:
    variant: str
    load: float
    ready_s: float = float("nan")
    marks: dict[str, list[float]] = field(default_factory=dict)
    numbers: dict[str, list[float]] = field(default_factory=dict)
    worker_rss_mb: list[float] = field(default_factory=list)
    cpu_s: float = float("nan")  # CPU seconds of the server's processes at ready: load-proof


def ready(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False


def read_lines(stream: IO[bytes], run: Run, started: float, log: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        at = time.perf_counter() - started
        line = raw.decode(errors="replace").rstrip()
        log.append(f"{at:7.3f} {line}")
        for name, pattern in MARKS:
            if pattern.search(line):
                run.marks.setdefault(name, []).append(round(at, 3))
        for match in NUMBERS.finditer(line):
            key = match.group(1) or "check_seconds"
            value = match.group(2) or match.group(3)
            run.numbers.setdefault(key, []).append(float(value))


def server_cpu_s(root_pid: int, container: str | None) -> float:
    """User + system CPU seconds of the server's live processes (in the container: all)."""
    if container is None:
        from kitchenware.localserver import process_tree_cpu_s

        return process_tree_cpu_s(root_pid)
    script = "cat /proc/[0-9]*/stat 2>/dev/null"
    shown = subprocess.run(["podman", "exec", container, "sh", "-c", script], capture_output=True)
    ticks = 0
    for line in shown.stdout.decode().splitlines():
        fields = line.rsplit(")", 1)[-1].split()
        if len(fields) > 12:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_rss(root_pid: int) -> list[float]:
    """RSS (MB) of each process below the server whose command line is a worker."""
    from kitchenware.localserver import descendants, process_table

    sizes = []
    for pid in descendants(process_table(), root_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"_bentoml_impl.worker" in cmdline:
            kb = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
            sizes.append(round(kb / 1024, 1))
    return sorted(sizes)


def once(
    variant: str, command: list[str], env: dict[str, str], port: int, log_dir: Path, cwd: Path
) -> Run:
    run = Run(variant, os.getloadavg()[0])
    log: list[str] = []
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    reader = threading.Thread(target=read_lines, args=(process.stdout, run, started, log))
    reader.start()
    try:
        while time.perf_counter() - started < TIMEOUT_S and process.poll() is None:
            if ready(port):
                run.ready_s = round(time.perf_counter() - started, 3)
                run.cpu_s = round(server_cpu_s(process.pid, env.get("_NAME")), 2)
                break
            time.sleep(POLL_S)
        time.sleep(1.0)  # at rest: the warm-up's buffers are in, no request runs
        if command[0] != "podman":
            run.worker_rss_mb = worker_rss(process.pid)
    finally:
        if command[0] == "podman":
            subprocess.run(["podman", "stop", "-t", "10", env["_NAME"]], capture_output=True)
        else:
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join()
    (log_dir / f"{variant}-{int(time.time())}.log").write_text("\n".join(log) + "\n")
    return run


def container_command(image: str, port: int, env: dict[str, str]) -> list[str]:
    """The smoke test's way: read-only root, a tmpfs for /tmp, the Deployment's env."""
    sys.path.insert(0, str(REPO / "deploy"))
    from container_smoke import deployment_pod_spec

    pod = deployment_pod_spec()
    name = f"kitchenware-coldstart-{uuid.uuid4().hex[:8]}"
    env["_NAME"] = name
    command = ["podman", "run", "--rm", "--name", name, "--read-only"]
    command += ["-p", f"127.0.0.1:{port}:3000"]
    command += [arg for value in pod.tmpfs for arg in ("--tmpfs", value)]
    settings = {**pod.env, **{k: v for k, v in env.items() if k.startswith("KITCHENWARE_")}}
    command += [arg for key, value in settings.items() for arg in ("-e", f"{key}={value}")]
    return [*command, image]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (each runs every variant)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:KEY=VALUE,KEY=VALUE (environment on top of this one); default 'default:'",
    )
    parser.add_argument("--container", help="run this image with podman instead of bentoml serve")
    parser.add_argument("--port", type=int, default=31600)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "cold_start")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = []
    for spec in args.variant or ["default:"]:
        name, _, pairs = spec.partition(":")
        extra = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
        variants.append((name, extra))
    if args.container:
        sys.path.insert(0, str(REPO / "deploy"))
        from container_engine import podman_env

        os.environ.update(podman_env())
    runs: list[Run] = []
    for _ in range(args.runs):
        for name, extra in variants:
            env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", **extra}
            repo = Path(env.pop("REPO", REPO))
            image = env.pop("IMAGE", args.container)
            if image:
                command = container_command(image, args.port, env)
            else:
                bentoml = str(repo / ".venv" / "bin" / "bentoml")
                command = [bentoml, "serve", "service:Kitchenware", "--host", "127.0.0.1"]
                command += ["--port", str(args.port)]
            run = once(name, command, env, args.port, args.out, repo)
            runs.append(run)
            print(json.dumps(run.__dict__), flush=True)
    print("\nvariant    ready s (median; each run)   CPU s to ready (median; each)   load at start")
    for name, _ in variants:
        mine = [r for r in runs if r.variant == name]
        times, cpus = [r.ready_s for r in mine], [r.cpu_s for r in mine]
        loads = ", ".join(f"{r.load:.1f}" for r in mine)
        each = ", ".join(f"{t:.2f}" for t in times)
        cpu_each = ", ".join(f"{t:.2f}" for t in cpus)
        print(
            f"{name:10} {statistics.median(times):5.2f}; {each:22} "
            f"{statistics.median(cpus):5.2f}; {cpu_each:22} {loads}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
