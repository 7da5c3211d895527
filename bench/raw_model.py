"""Raw in-process speed of the model through the service's own inference function.

Runs `kitchenware.core.inference.Classifier.predict_arrays` (the traced tf.function the service
calls) on preprocessed arrays of the benchmark JPEG set at several batch sizes, and times
the shared preprocessing separately. Prints one JSON object.

    python bench/raw_model.py --batches 1 8 16 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import MODEL_DIR, ensure_model_dir, load_jpeg_set, percentiles_ms

# Calls per batch size: enough for stable percentiles at ~10 img/s without a long run.
DEFAULT_REPEATS = {1: 20, 8: 6, 16: 4, 32: 3}


def measure_raw(
    model_dir: Path, batch_sizes: list[int], repeats: dict[int, int] | None = None
) -> dict[str, Any]:
    from kitchenware.core.inference import Classifier
    from kitchenware.core.preprocessing import preprocess_bytes

    repeats = {**DEFAULT_REPEATS, **(repeats or {})}
    classifier = Classifier.load(model_dir)
    classifier.warm_up()
    jpegs = load_jpeg_set()

    decode_seconds = []
    arrays = []
    for data in jpegs:
        start = time.perf_counter()
        arrays.append(preprocess_bytes(data, classifier.image_size))
        decode_seconds.append(time.perf_counter() - start)
    pool = np.stack(arrays)

    results: list[dict[str, Any]] = []
    for batch_size in batch_sizes:
        batch = np.resize(pool, (batch_size, *pool.shape[1:]))  # cycles through the set
        classifier.predict_arrays(batch)  # first call at a new shape builds oneDNN kernels
        latencies = []
        cpu_start = time.process_time()  # all threads of this process
        for _ in range(repeats.get(batch_size, 3)):
            start = time.perf_counter()
            classifier.predict_arrays(batch)
            latencies.append(time.perf_counter() - start)
        total = sum(latencies)
        cpu_s = time.process_time() - cpu_start
        results.append(
            {
                "batch_size": batch_size,
                "calls": len(latencies),
                "images_per_s": batch_size * len(latencies) / total,
                "latency_ms": percentiles_ms(latencies),
                "cpu_ms_per_image": 1000 * cpu_s / (batch_size * len(latencies)),
            }
        )
        print(
            f"raw batch {batch_size:>2}: {results[-1]['images_per_s']:6.2f} img/s, "
            f"p50 {results[-1]['latency_ms']['p50']:7.1f} ms",
            file=sys.stderr,
        )
    return {
        "model_dir": str(model_dir),
        "image_size": classifier.image_size,
        "preprocess_ms": percentiles_ms(decode_seconds),
        "batches": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = measure_raw(ensure_model_dir(args.model_dir), args.batches)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
