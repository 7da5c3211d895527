"""Serving benchmark: the raw model vs this service vs a naive Flask peer, in one run.

Same model (Xception 299 px, random weights), same JPEG set, loopback only:
1. raw in-process: Classifier.predict_arrays (the service's inference function), batch 1-32;
2. `bentoml serve service:Kitchenware` with the shipped defaults: /classify at each
   concurrency, then /classify_batch;
3. bench/naive_flask_server.py (model.predict per request) at the same concurrencies.
Prints a table and the ratios of issue 5; writes bench/out/serving.json and serving.png.

    python bench/serving.py            # about 5-8 minutes on 2 cores
    python bench/serving.py --quick    # a smoke run with few requests
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import MODEL_DIR, OUT_DIR, REPO_ROOT, load_jpeg_set
from loadgen import run_load
from report import compute_ratios, format_ratios, format_table, write_plot
from servers import running_peer, running_service

from kitchenware.localserver import process_tree_cpu_s

CONCURRENCIES = [1, 4, 16, 32]
REQUEST_TIMEOUT_S = 120.0  # per request; a queue of 32 at ~0.1 s/img stays far below it


def requests_for(concurrency: int, rounds: int, minimum: int) -> int:
    """Each client sends `rounds` requests, with at least `minimum` in all."""
    return max(minimum, concurrency * rounds)


async def measure_levels(
    url: str,
    images: list[bytes],
    concurrencies: list[int],
    rounds: int,
    minimum: int,
    cpu_probe: Callable[[], float] | None = None,
) -> list[dict[str, Any]]:
    levels = []
    for concurrency in concurrencies:
        result = await run_load(
            url,
            concurrency=concurrency,
            requests=requests_for(concurrency, rounds, minimum),
            images=images,
            timeout_s=REQUEST_TIMEOUT_S,
            warmup_requests=concurrency,  # fills the queue / batcher before timing
            cpu_probe=cpu_probe,
        )
        level = {**result.as_dict(), "loadavg_after": os.getloadavg()}
        levels.append(level)
        print(
            f"  c={concurrency:>2}: {result.req_per_s:6.2f} req/s, p50 "
            f"{result.latency_ms['p50']:7.0f} ms, p99 {result.latency_ms['p99']:7.0f} ms, "
            f"errors {result.errors or 0}",
            file=sys.stderr,
        )
    return levels


def run_raw(quick: bool) -> dict[str, Any]:
    """Raw measurement in a child process, so this process never loads TensorFlow."""
    command = [sys.executable, str(Path(__file__).with_name("raw_model.py"))]
    if quick:
        command += ["--batches", "1", "8"]
    completed = subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=subprocess.PIPE)
    return dict(json.loads(completed.stdout))


def effective_settings() -> dict[str, Any]:
    from kitchenware.serving.settings import ServiceSettings

    return ServiceSettings().model_dump()


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="requests per client per level")
    parser.add_argument("--min-requests", type=int, default=24, help="fewest requests per level")
    parser.add_argument("--batch-images", type=int, default=16, help="images per batch request")
    parser.add_argument("--quick", action="store_true", help="smoke run: c=1,4, few requests")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    concurrencies = [1, 4] if args.quick else CONCURRENCIES
    rounds, minimum = (2, 4) if args.quick else (args.rounds, args.min_requests)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    run: dict[str, Any] = {
        "command": " ".join(["python", "bench/serving.py", *(argv or sys.argv[1:])]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
    images = load_jpeg_set()
    bentoml_home = Path(tempfile.mkdtemp(prefix="kitchenware-bench-bentoml-"))
    os.environ["BENTOML_HOME"] = str(bentoml_home)  # before anything imports bentoml
    try:
        print("1/3 raw model in-process", file=sys.stderr)
        run["raw"] = run_raw(args.quick)  # also builds the model dir on the first run
        run["raw"]["loadavg_after"] = os.getloadavg()
        from kitchenware.core.store import import_model_dir

        tag, _ = import_model_dir(MODEL_DIR)
        run["settings"] = effective_settings()
        print(f"2/3 service ({tag}) {run['settings']}", file=sys.stderr)
        with running_service(tag, bentoml_home) as service:
            run["service_ready_s"] = service.ready_s
            url = service.base_url
            service_cpu = partial(process_tree_cpu_s, service.process.pid)
            run["service"] = asyncio.run(
                measure_levels(
                    url + "/classify", images, concurrencies, rounds, minimum, service_cpu
                )
            )
            batch = asyncio.run(
                run_load(
                    url + "/classify_batch",
                    concurrency=2,
                    requests=2 if args.quick else 8,
                    images=images,
                    field_name="images",
                    images_per_request=2 if args.quick else args.batch_images,
                    timeout_s=REQUEST_TIMEOUT_S,
                    warmup_requests=1,
                    cpu_probe=service_cpu,
                )
            )
            run["service_batch"] = {**batch.as_dict(), "loadavg_after": os.getloadavg()}
    finally:
        shutil.rmtree(bentoml_home, ignore_errors=True)

    print("3/3 naive Flask peer", file=sys.stderr)
    with running_peer(MODEL_DIR) as peer:
        run["peer_ready_s"] = peer.ready_s
        peer_cpu = partial(process_tree_cpu_s, peer.process.pid)
        run["peer"] = asyncio.run(
            measure_levels(
                peer.base_url + "/predict", images, concurrencies, rounds, minimum, peer_cpu
            )
        )

    run["machine"]["loadavg_end"] = os.getloadavg()
    run["wall_s"] = time.perf_counter() - started
    run["ratios"] = compute_ratios(run)
    (args.out / "serving.json").write_text(json.dumps(run, indent=2) + "\n")
    plot = write_plot(run, args.out / "serving.png")
    load_start, load_end = run["machine"]["loadavg_start"][0], run["machine"]["loadavg_end"][0]
    print(
        f"\n{run['machine']['cpu']} x{run['machine']['cpus']}; 1-min load "
        f"{load_start:.2f} at start, {load_end:.2f} at end; {run['wall_s']:.0f} s\n"
    )
    print(format_table(run))
    print()
    print(format_ratios(run["ratios"]))
    print(f"\nwrote {args.out / 'serving.json'} and {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
