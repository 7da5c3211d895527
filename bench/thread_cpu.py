"""CPU per photo of each thread of a served /classify, from /proc, under a closed-loop load.

py-spy's shares count a thread as busy while it waits for a core; the kernel's per-thread
CPU time does not. Starts `bentoml serve` on the real model (KITCHENWARE_* overrides as
NAME=VALUE arguments), warms up, reads every thread's CPU time, drives `--requests`
uploads at `--concurrency`, reads again, and prints CPU ms per photo per process and per
thread, named by `py-spy dump` (OpenVINO's own threads have no Python name). Needs py-spy.

    python bench/thread_cpu.py --concurrency 16 KITCHENWARE_WORKERS=2
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import cpu_facts, describe_cpu, python_threads, real_photos, threads_cpu_s
from loadgen import run_load
from servers import running_service
from serving import HOME, prepare_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("settings", nargs="*", help="KITCHENWARE_NAME=VALUE overrides")
    args = parser.parse_args(argv)
    env = dict(setting.split("=", 1) for setting in args.settings)
    tag, _, _ = prepare_model()
    photos = list(real_photos().values())
    with running_service(tag, HOME, env, name="service-thread-cpu") as server:
        url = server.base_url + "/classify"
        asyncio.run(run_load(url, concurrency=args.concurrency, requests=64, images=photos))
        before = threads_cpu_s(server.process.pid)
        result = asyncio.run(
            run_load(url, concurrency=args.concurrency, requests=args.requests, images=photos)
        )
        after = threads_cpu_s(server.process.pid)
        names = python_threads(server.process.pid)
    used = {key: after[key] - before.get(key, 0.0) for key in after}
    per_image = {key: 1000 * seconds / max(result.ok, 1) for key, seconds in used.items()}
    per_process: dict[int, float] = {}
    for (pid, _), ms in per_image.items():
        per_process[pid] = per_process.get(pid, 0.0) + ms
    print(f"CPU: {describe_cpu(cpu_facts())}; settings {env or 'shipped defaults'}")
    print(
        f"{result.ok} answers at c={args.concurrency}: {result.images_per_s:.1f} img/s, "
        f"p50 {result.latency_ms['p50']:.0f} ms, errors {result.errors or 0}; server "
        f"{sum(per_image.values()):.2f} ms CPU/img, load generator "
        f"{result.client_cpu_ms_per_image or 0:.2f}"
    )
    for pid, ms in sorted(per_process.items(), key=lambda kv: -kv[1]):
        if ms >= 0.01:
            print(f"process {pid}: {ms:.2f} ms/img")
            for (p, tid), t_ms in sorted(per_image.items(), key=lambda kv: -kv[1]):
                if p == pid and t_ms >= 0.01:
                    name = names.get((p, tid), "native (OpenVINO)")
                    print(f"  {name:<40} {t_ms:6.2f} ms/img")
    return 0 if not result.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
