"""CPU per image of the background prediction recorder, in one process (issue 17r).

The served path's recorder: `PredictionRecorder` + `FeedbackLoop.describe` + a real SQLite
`FeedbackStore` (photos kept) + the `bentoml.monitor` prediction log (default exporter,
JSON lines under `monitoring/`). N predictions of the 18 real photos are submitted in
request-sized bursts and flushed; the figure is the writer thread's CPU time
(`time.thread_time` measured inside it) per prediction. `--fresh` gives every prediction
distinct bytes (a new photo file each time) instead of the 18 repeating photos; `--profile`
prints a CPU-time cProfile of the writer thread.

`--served` measures the same thread in `bentoml serve` (default settings): after a
warm-up, `py-spy dump` finds each worker's "kitchenware-recorder" thread, and its CPU
(/proc, user + system) over `--predictions` /classify requests at c=`--concurrency` is
divided by the images answered, beside the whole server's CPU per image.

    .venv/bin/python bench/recorder_cpu.py --predictions 3000 [--fresh] [--profile]
    .venv/bin/python bench/recorder_cpu.py --served --predictions 1000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_assets import (
    cpu_facts,
    describe_cpu,
    process_tree_cpu_s,
    python_threads,
    real_photos,
    threads_cpu_s,
)
from loadgen import run_load
from servers import running_service
from serving import HOME, prepare_model

CLASS_NAMES = ["cup", "fork", "glass", "knife", "plate", "spoon"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=3000)
    parser.add_argument("--burst", type=int, default=16, help="predictions submitted at once")
    parser.add_argument("--rate", type=float, default=100.0, help="predictions a second")
    parser.add_argument("--fresh", action="store_true", help="distinct bytes per prediction")
    parser.add_argument("--profile", action="store_true", help="cProfile the writer thread")
    parser.add_argument("--served", action="store_true", help="in bentoml serve, over HTTP")
    parser.add_argument("--concurrency", type=int, default=16, help="--served clients")
    args = parser.parse_args()
    if args.served:
        served(args)
        return

    work = Path(tempfile.mkdtemp(prefix="recorder-cpu-"))
    os.chdir(work)  # bentoml.monitor's default exporter writes under ./monitoring
    os.environ.setdefault("BENTOML_HOME", str(work / "bentoml"))
    from kitchenware.serving.feedback.handlers import FeedbackLoop
    from kitchenware.serving.feedback.recorder import PredictionRecorder
    from kitchenware.serving.settings import ServiceSettings

    settings = ServiceSettings(feedback_url=f"sqlite:///{work / 'feedback.db'}")
    loop = FeedbackLoop(settings, "kitchenware-xception:bench", CLASS_NAMES, "openvino-int8")
    recorder: PredictionRecorder = loop.recorder
    photos = list(real_photos().values())
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(len(CLASS_NAMES)), size=args.predictions).astype(np.float32)

    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    run = recorder._run

    def profiled() -> None:  # the writer thread, under cProfile's CPU clock
        assert profiler is not None
        profiler.enable()
        try:
            run()
        finally:
            profiler.disable()

    if profiler is not None:
        recorder._run = profiled  # type: ignore[method-assign]

    def submit(k: int) -> None:
        data = photos[k % len(photos)]
        if args.fresh:
            data = data + k.to_bytes(8, "big")  # a JPEG ignores bytes after its end
        recorder.submit(f"req-{k}", [data], scores[k % len(scores)][None], 12.0)

    for k in range(32):  # warm-up: the thread starts, bentoml.monitor imports, schema written
        submit(args.predictions + k)
    assert recorder.flush(60) and recorder._thread is not None
    writer = (os.getpid(), recorder._thread.native_id or 0)
    before, wall = threads_cpu_s(os.getpid())[writer], time.perf_counter()
    for n in range(0, args.predictions, args.burst):
        for k in range(n, min(n + args.burst, args.predictions)):
            submit(k)
        time.sleep(args.burst / args.rate)  # requests arrive over time, not all at once
    assert recorder.flush(600)
    used, wall = threads_cpu_s(os.getpid())[writer] - before, time.perf_counter() - wall
    recorder.close()
    kept = loop.store.get().counts()["predictions"] - 32
    print(
        f"in-process, {args.burst} every {args.burst / args.rate:.2f} s: {args.predictions} "
        f"predictions, {kept} kept; writer thread {1000 * used / args.predictions:.3f} ms "
        f"CPU/prediction; wall {wall:.1f} s; load {os.getloadavg()[0]:.2f}"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def recorder_threads(root_pid: int) -> list[tuple[int, int]]:
    """(worker pid, native thread id) of every worker's recorder thread, via py-spy dump."""
    return [key for key, name in python_threads(root_pid).items() if name == "kitchenware-recorder"]


def served(args: argparse.Namespace) -> None:
    tag, _, photos_dir = prepare_model()
    images = [path.read_bytes() for path in sorted(photos_dir.glob("*.jpg"))]
    facts = cpu_facts()
    with running_service(tag, HOME, name="recorder-cpu") as server:
        url, pid = server.base_url + "/classify", server.process.pid
        asyncio.run(run_load(url, concurrency=args.concurrency, requests=200, images=images))
        before = threads_cpu_s(pid)
        tree_before = process_tree_cpu_s(pid)
        result = asyncio.run(
            run_load(url, concurrency=args.concurrency, requests=args.predictions, images=images)
        )
        time.sleep(0.5)  # the last group commit
        # A worker the warm-up missed (keep-alive connections land on one) starts its thread
        # during the run: all of its CPU counts.
        threads = recorder_threads(pid)
        assert threads, "no kitchenware-recorder thread found (is py-spy installed?)"
        after = threads_cpu_s(pid)
        used = sum(after[t] - before.get(t, 0.0) for t in threads if t in after)
        tree = process_tree_cpu_s(pid) - tree_before
    done = max(result.ok, 1)
    print(
        f"served c={args.concurrency}: {result.ok} answers ({result.errors or 0} errors) at "
        f"{result.images_per_s:.1f} img/s; recorder threads ({len(threads)}) "
        f"{1000 * used / done:.3f} ms CPU/img; server {1000 * tree / done:.1f} ms CPU/img; "
        f"CPU {describe_cpu(facts)}; load {facts['loadavg']} -> {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
