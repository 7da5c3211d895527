"""Where a served /classify spends its CPU: py-spy over every process of `bentoml serve`.

Starts the service on the real model (the default backend and settings unless KITCHENWARE_*
says otherwise), drives `--concurrency` clients for `--requests` uploads of the real photos
while `py-spy record --subprocesses` samples the server's process tree, then prints:

- each process's share of the samples (the arbiter and each worker);
- the samples by part of the served path (OpenVINO, decoding, BentoML's multipart parse and
  temp file, our gates, logging, the recorder, the event loop...): a sample counts for the
  innermost frame of its stack that belongs to a part;
- the functions with the most samples: on CPU at the top of the stack (self) and anywhere in
  the stack (inclusive);
- the server's CPU per image (process tree, psutil) and its event-loop threads' share.

Idle threads are left out (py-spy's default). A thread waiting in `infer` counts as busy
(OpenVINO computes in native threads py-spy does not see), so shares are of busy Python
time, not pure CPU. Needs `pip install py-spy`.

    python bench/profile_served.py --concurrency 16 --requests 300
    python bench/profile_served.py --collapsed bench/out/profile-served.collapsed  # re-read
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import OUT_DIR, cpu_facts, describe_cpu, process_tree_cpu_s, py_spy
from loadgen import run_load
from servers import running_service
from serving import HOME, prepare_model, say

# Parts of the served path, by the file of a frame; a sample counts for the innermost frame
# that matches (python-multipart under our gate is the gate's, under starlette BentoML's).
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("OpenVINO infer (thread waiting in infer)", ("openvino/", "openvino_backend.py")),
    ("decode (Pillow, preprocessing)", ("PIL/", "runtime/preprocessing.py", "decoding.py")),
    ("prediction recorder, store (background)", ("serving/feedback/", "sqlalchemy/", "sqlite3")),
    ("logging", ("logging/",)),
    ("prometheus metrics", ("prometheus_client/",)),
    ("pydantic", ("pydantic/", "pydantic_core")),
    (
        "BentoML multipart parse + temp file per part",
        ("starlette/formparsers.py", "_bentoml_sdk/validators.py", "_bentoml_impl/serde.py"),
    ),
    ("our upload gate", ("serving/http/uploads.py",)),
    ("our other middlewares (request id, auth, docs, admission, tasks)",
     ("serving/http/", "inference/tasks.py")),
    ("batcher, pipeline, endpoints", ("inference/", "service.py")),
    (
        "BentoML/starlette/OpenTelemetry app, middlewares, routing",
        ("_bentoml_impl/", "_bentoml_sdk/", "bentoml/", "starlette/", "opentelemetry", "asgi/"),
    ),
    ("uvicorn HTTP protocol", ("uvicorn/protocols/", "httptools")),
    (
        "event loop (uvloop), thread hand-offs and waits",
        ("asyncio/", "anyio/", "uvicorn/", "threading.py", "queue.py", "concurrent/"),
    ),
)  # fmt: skip
OTHER = "other"
EVENT_LOOP = "Runner.run (asyncio/runners.py)"  # the bottom of a worker's event-loop thread
FILE_OF = re.compile(r"\((.*?)(?::\d+)?\)$")


@dataclass
class Profile:
    """py-spy's collapsed stacks, counted per function, per part and per process."""

    total: int = 0
    own: Counter[str] = field(default_factory=Counter)
    anywhere: Counter[str] = field(default_factory=Counter)
    parts: Counter[str] = field(default_factory=Counter)
    loop_parts: Counter[str] = field(default_factory=Counter)  # the workers' event loops
    per_process: defaultdict[str, Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        found = FILE_OF.search(frame)
        path = found.group(1) if found else ""
        for name, markers in PARTS:
            if any(marker in path for marker in markers):
                return name
    return OTHER


def process_name(frames: list[str]) -> str:
    """The innermost process of a stack: `worker N` or the arbiter."""
    processes = [frame for frame in frames if frame.startswith("process ")]
    worker = re.search(r"--worker-id (\d+)", processes[-1]) if processes else None
    return f"worker {worker.group(1)}" if worker else "arbiter"


def read_collapsed(text: str) -> Profile:
    """py-spy's raw (collapsed) stacks -> samples per function, part and process."""
    profile = Profile()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        everything = stack.split(";")
        frames = [
            re.sub(r":\d+\)$", ")", frame)  # one entry per function, not per line
            for frame in everything
            if not frame.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        samples = int(count)
        profile.total += samples
        profile.own[frames[-1]] += samples
        for frame in set(frames):
            profile.anywhere[frame] += samples
        part = part_of(frames)
        profile.parts[part] += samples
        if EVENT_LOOP in frames:
            profile.loop_parts[part] += samples
        profile.per_process[process_name(everything)][part] += samples
    return profile


def top(counts: Counter[str], total: int, n: int) -> list[str]:
    return [f"{100 * c / total:5.1f}%  {frame}" for frame, c in counts.most_common(n)]


def parts_table(profile: Profile) -> list[str]:
    """Share of all samples per part, overall and per process."""
    processes = sorted(profile.per_process)
    total = profile.total or 1
    rows = [
        "| part of the served path | all | " + " | ".join(processes) + " |",
        "|---|---:|" + "---:|" * len(processes),
    ]
    for name, count in profile.parts.most_common():
        shares = [f"{100 * profile.per_process[p][name] / total:.1f}%" for p in processes]
        rows.append(f"| {name} | {100 * count / total:.1f}% | " + " | ".join(shares) + " |")
    sums = [f"{100 * sum(profile.per_process[p].values()) / total:.1f}%" for p in processes]
    rows.append("| **process total** | 100% | " + " | ".join(sums) + " |")
    return rows


def loop_table(profile: Profile) -> list[str]:
    """The event-loop threads alone (the HTTP edge runs there): share of their samples."""
    total = sum(profile.loop_parts.values()) or 1
    rows = [
        f"| part, event-loop threads only ({100 * total / (profile.total or 1):.1f}% of all) "
        "| share |",
        "|---|---:|",
    ]
    rows += [f"| {n} | {100 * c / total:.1f}% |" for n, c in profile.loop_parts.most_common()]
    return rows


def main_threads_cpu_s(root_pid: int) -> float:
    """CPU seconds of each server process's main thread (the event loop in a worker)."""
    try:
        processes = [psutil.Process(root_pid), *psutil.Process(root_pid).children(True)]
    except psutil.NoSuchProcess:
        return 0.0
    used = 0.0
    for process in processes:
        try:
            threads = {t.id: t for t in process.threads()}
        except psutil.NoSuchProcess:
            continue
        if (main := threads.get(process.pid)) is not None:
            used += main.user_time + main.system_time
    return used


def profile_server(args: argparse.Namespace, collapsed: Path) -> list[str]:
    """Run the server under load with py-spy attached; a few lines about the run."""
    tag, _, photos_dir = prepare_model()
    images = [path.read_bytes() for path in sorted(photos_dir.glob("*.jpg"))]
    facts = cpu_facts()
    with running_service(tag, HOME, name="profiled") as server:
        url = server.base_url + "/classify"
        pid = server.process.pid
        asyncio.run(run_load(url, concurrency=args.concurrency, requests=32, images=images))
        record = [py_spy(), "record", "--subprocesses", "--pid", str(pid)]
        record += ["--rate", str(args.rate), "--format", "raw", "--output", str(collapsed)]
        spy = subprocess.Popen([*record, "--nonblocking"], stdout=subprocess.DEVNULL)
        time.sleep(2)  # py-spy attaches to every process of the tree
        say(f"profiling {args.requests} requests at c={args.concurrency}")
        cpu_before, loops_before = process_tree_cpu_s(pid), main_threads_cpu_s(pid)
        result = asyncio.run(
            run_load(url, concurrency=args.concurrency, requests=args.requests, images=images)
        )
        cpu_used = process_tree_cpu_s(pid) - cpu_before
        loops_used = main_threads_cpu_s(pid) - loops_before
        spy.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
        spy.wait(timeout=120)
    images_done = max(result.ok, 1)
    return [
        f"python bench/profile_served.py --concurrency {args.concurrency} "
        f"--requests {args.requests} (py-spy --subprocesses, {args.rate} Hz, non-idle samples)",
        f"CPU: {describe_cpu(facts)}; load {facts['loadavg']} -> {os.getloadavg()[0]:.2f}",
        f"{result.ok} answers at {result.images_per_s:.1f} img/s, p50 "
        f"{result.latency_ms['p50']:.0f} ms, errors {result.errors or 0}",
        f"server CPU {1000 * cpu_used / images_done:.1f} ms/img (process tree, py-spy "
        f"attached), of which the main threads (event loops) {1000 * loops_used / images_done:.1f}"
        f" ms/img; load generator {result.client_cpu_ms_per_image or 0:.1f} ms/img",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "profile-served.txt")
    parser.add_argument("--collapsed", type=Path, help="re-read this py-spy recording instead")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.collapsed is not None:
        collapsed, header = args.collapsed, [f"py-spy recording {args.collapsed}"]
    else:
        collapsed = args.out.with_suffix(".collapsed")
        header = profile_server(args, collapsed)
    profile = read_collapsed(collapsed.read_text())
    total = profile.total
    text = "\n".join(
        [*header, f"{total} samples", "", "by part (innermost frame that belongs to a part):",
         *parts_table(profile), "", *loop_table(profile), "",
         "self (on CPU at the top of the stack):", *top(profile.own, total, args.top), "",
         "inclusive (anywhere in the stack):", *top(profile.anywhere, total, args.top)]
    )  # fmt: skip
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
