"""Where a served /classify spends its CPU: py-spy over every process of `bentoml serve`.

Starts the service on the real model (the default backend and settings unless KITCHENWARE_*
says otherwise), drives `--concurrency` clients for `--requests` uploads of the real photos
while `py-spy record --subprocesses` samples the server's process tree, then prints the
functions with the most samples: on-CPU at the top of the stack (self) and anywhere in the
stack (inclusive). Idle threads are left out (py-spy's default). Needs `pip install py-spy`.

    python bench/profile_served.py --concurrency 16 --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import OUT_DIR, cpu_facts, describe_cpu
from loadgen import run_load
from servers import running_service
from serving import HOME, prepare_model, say


def read_collapsed(text: str) -> tuple[Counter[str], Counter[str], int]:
    """py-spy's raw (collapsed) stacks -> samples per function: self, inclusive, total."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [
            re.sub(r":\d+\)$", ")", frame)  # one entry per function, not per line
            for frame in stack.split(";")
            if not frame.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            anywhere[frame] += samples
    return own, anywhere, total


def top(counts: Counter[str], total: int, n: int) -> list[str]:
    return [f"{100 * c / total:5.1f}%  {frame}" for frame, c in counts.most_common(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "profile-served.txt")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    tag, _, photos_dir = prepare_model()
    images = [path.read_bytes() for path in sorted(photos_dir.glob("*.jpg"))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    collapsed = args.out.with_suffix(".collapsed")
    facts = cpu_facts()
    with running_service(tag, HOME, name="profiled") as server:
        url = server.base_url + "/classify"
        asyncio.run(run_load(url, concurrency=args.concurrency, requests=32, images=images))
        record = [py_spy, "record", "--subprocesses", "--pid", str(server.process.pid)]
        record += ["--rate", str(args.rate), "--format", "raw", "--output", str(collapsed)]
        spy = subprocess.Popen([*record, "--nonblocking"], stdout=subprocess.DEVNULL)
        time.sleep(2)  # py-spy attaches to every process of the tree
        say(f"profiling {args.requests} requests at c={args.concurrency}")
        result = asyncio.run(
            run_load(url, concurrency=args.concurrency, requests=args.requests, images=images)
        )
        spy.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
        spy.wait(timeout=120)
    own, anywhere, total = read_collapsed(collapsed.read_text())
    header = [
        f"python bench/profile_served.py --concurrency {args.concurrency} "
        f"--requests {args.requests} (py-spy --subprocesses, {args.rate} Hz, non-idle samples)",
        f"CPU: {describe_cpu(facts)}; load {facts['loadavg']} -> {os.getloadavg()[0]:.2f}",
        f"{result.ok} answers at {result.images_per_s:.1f} img/s, errors {result.errors or 0}; "
        f"{total} samples",
    ]
    text = "\n".join(
        [*header, "", "self (on CPU at the top of the stack):", *top(own, total, args.top), "",
         "inclusive (anywhere in the stack):", *top(anywhere, total, args.top)]
    )  # fmt: skip
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
