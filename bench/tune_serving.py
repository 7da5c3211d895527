"""Tune the service's defaults: workers x TF threads and the batching parameters.

Starts `bentoml serve` once per configuration (KITCHENWARE_* and TF_NUM_*_THREADS env
overrides) on the benchmark model and measures /classify at concurrency 1 and 32.
Prints a Markdown table and writes bench/out/tuning.json.

    python bench/tune_serving.py                  # the grid twice, ~40 s per config
    python bench/tune_serving.py --only w1-b32-l60000 w2x1-b32-l60000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import MODEL_DIR, OUT_DIR, ensure_model_dir, load_jpeg_set
from loadgen import run_load
from servers import running_service

from kitchenware.localserver import process_tree_cpu_s


def config(workers: int, batch: int, latency_ms: int, tf_threads: int | None = None) -> dict:
    """One grid point; tf_threads=None leaves TensorFlow's default (one per core)."""
    env = {
        "KITCHENWARE_WORKERS": str(workers),
        "KITCHENWARE_MAX_BATCH_SIZE": str(batch),
        "KITCHENWARE_MAX_LATENCY_MS": str(latency_ms),
    }
    threads = "default"
    if tf_threads is not None:
        threads = str(tf_threads)
        env |= {"TF_NUM_INTRAOP_THREADS": threads, "OMP_NUM_THREADS": threads}
    name = f"w{workers}{'' if tf_threads is None else f'x{tf_threads}'}-b{batch}-l{latency_ms}"
    return {"name": name, "workers": workers, "tf_threads": threads, "max_batch_size": batch,
            "max_latency_ms": latency_ms, "env": env}  # fmt: skip


GRID = [
    config(1, 32, 60_000),  # the starting default
    config(2, 32, 60_000, tf_threads=1),
    config(2, 32, 60_000),  # 2 workers x 2 threads: oversubscribed on 2 cores
    config(1, 8, 60_000),
    config(1, 16, 60_000),
    config(1, 32, 3_000),  # a budget shorter than one full queue (32 x ~0.1 s x 2)
    config(1, 32, 15_000),
]


async def measure(url: str, images: list[bytes], pgid: int, rounds: int) -> dict[str, Any]:
    cpu = partial(process_tree_cpu_s, pgid)
    single = await run_load(
        url, concurrency=1, requests=12, images=images, warmup_requests=4, cpu_probe=cpu
    )
    loaded = await run_load(
        url, concurrency=32, requests=32 * rounds, images=images, warmup_requests=32,
        cpu_probe=cpu,
    )  # fmt: skip
    return {"c1": single.as_dict(), "c32": loaded.as_dict(), "loadavg_after": os.getloadavg()}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| config | workers x TF threads | max_batch_size | max_latency_ms | c=1 p50 ms "
        "| c=32 img/s | c=32 p50 ms | c=32 p99 ms | c=32 cpu ms/img | errors (c=1, c=32) "
        "| 1-min load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c1, c32 = row["result"]["c1"], row["result"]["c32"]
        errors = f"{c1['errors'] or 0}, {c32['errors'] or 0}"
        cpu = c32["server_cpu_ms_per_image"]
        lines.append(
            f"| {row['name']} | {row['workers']} x {row['tf_threads']} | {row['max_batch_size']} "
            f"| {row['max_latency_ms']} | {c1['latency_ms']['p50']:.0f} "
            f"| {c32['images_per_s']:.2f} | {c32['latency_ms']['p50']:.0f} "
            f"| {c32['latency_ms']['p99']:.0f} | {'-' if cpu is None else f'{cpu:.0f}'} "
            f"| {errors} | {row['result']['loadavg_after'][0]:.2f} |"
        )
    return "\n".join(lines)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Per config: the median over passes of c=32 throughput and c=1 p50, all errors."""
    lines = [
        "| config | passes | c=32 img/s (median) | c=1 p50 ms (median) | c=32 cpu ms/img "
        "(median) | errors at c=32 (all passes) |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(row["name"] for row in rows):
        runs = [row["result"] for row in rows if row["name"] == name]
        errors = sum(sum(r["c32"]["errors"].values()) for r in runs)
        cpu = [r["c32"]["server_cpu_ms_per_image"] or 0.0 for r in runs]
        lines.append(
            f"| {name} | {len(runs)} "
            f"| {statistics.median(r['c32']['images_per_s'] for r in runs):.2f} "
            f"| {statistics.median(r['c1']['latency_ms']['p50'] for r in runs):.0f} "
            f"| {statistics.median(cpu):.0f} | {errors} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="config names to run (default: all)")
    parser.add_argument("--rounds", type=int, default=4, help="requests per client at c=32")
    parser.add_argument(
        "--repeats", type=int, default=2, help="passes over the grid, alternating order"
    )
    args = parser.parse_args(argv)
    grid = [c for c in GRID if not args.only or c["name"] in args.only]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="kitchenware-tune-bentoml-"))
    os.environ["BENTOML_HOME"] = str(home)  # before anything imports bentoml
    images = load_jpeg_set()
    ensure_model_dir()
    rows = []
    try:
        from kitchenware.core.store import import_model_dir

        tag, _ = import_model_dir(MODEL_DIR)
        passes = [grid if rep % 2 == 0 else grid[::-1] for rep in range(args.repeats)]
        for point in (p for grid_pass in passes for p in grid_pass):
            started = time.perf_counter()
            print(f"{point['name']}: starting", file=sys.stderr)
            with running_service(tag, home, point["env"], name=f"tune-{point['name']}") as srv:
                result = asyncio.run(
                    measure(srv.base_url + "/classify", images, srv.process.pid, args.rounds)
                )
            rows.append({**point, "result": result, "wall_s": time.perf_counter() - started})
            print(markdown_table(rows[-1:]).splitlines()[-1], file=sys.stderr)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        (OUT_DIR / "tuning.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown_table(rows))
    print()
    print(summary_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
