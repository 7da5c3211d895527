"""Raw in-process pipeline of one backend: real JPEG bytes -> decode + resize -> predict.

What the service does per image, minus HTTP: `preprocess_bytes` (the shared decode) and the
backend's `predict_arrays` (kitchenware.runtime.backends), at several batch sizes. Runs one
backend per process so TensorFlow never shares a process with OpenVINO. Prints JSON.

    python bench/raw_pipeline.py --model-dir DIR --backend openvino-fp32 --photos DIR
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import percentiles_ms

ROUNDS = {1: 36, 8: 6, 16: 4, 32: 3}  # calls per batch size (about 36-100 images each)


def measure(model_dir: Path, backend_name: str, photos: list[bytes], batches: list[int]) -> dict:
    from kitchenware.runtime.backends import load_backend
    from kitchenware.runtime.preprocessing import preprocess_bytes

    started = time.perf_counter()
    backend = load_backend(model_dir, backend_name, allow_failed_gate=True)
    backend.warm_up()
    load_s = time.perf_counter() - started
    size = backend.image_size
    decode_s = []
    for data in photos:
        t = time.perf_counter()
        preprocess_bytes(data, size)
        decode_s.append(time.perf_counter() - t)
    results: list[dict[str, Any]] = []
    for batch_size in batches:
        chosen = [photos[i % len(photos)] for i in range(batch_size)]
        backend.predict_arrays(np.zeros((batch_size, size, size, 3), np.float32))  # shape warm-up
        calls, predict_s = [], []
        cpu0 = time.process_time()
        for _ in range(ROUNDS.get(batch_size, 3)):
            t = time.perf_counter()
            batch = np.stack([preprocess_bytes(data, size) for data in chosen])
            t_predict = time.perf_counter()
            backend.predict_arrays(batch)
            done = time.perf_counter()
            calls.append(done - t)
            predict_s.append(done - t_predict)
        images = batch_size * len(calls)
        results.append(
            {
                "batch_size": batch_size,
                "images_per_s": images / sum(calls),
                "predict_images_per_s": images / sum(predict_s),
                "latency_ms": percentiles_ms(calls),
                "predict_ms": percentiles_ms(predict_s),  # the model call alone
                "cpu_ms_per_image": 1000 * (time.process_time() - cpu0) / images,
            }
        )
        print(
            f"  raw {backend_name} b={batch_size:>2}: {results[-1]['images_per_s']:6.1f} img/s "
            f"(predict only {results[-1]['predict_images_per_s']:6.1f})",
            file=sys.stderr,
        )
    return {
        "backend": backend_name,
        "runtime": backend.runtime_info(),
        "load_s": load_s,
        "decode_ms": percentiles_ms(decode_s),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tensorflow_imported": "tensorflow" in sys.modules,
        "batches": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--photos", type=Path, required=True, help="folder of JPEGs")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32])
    args = parser.parse_args(argv)
    photos = [path.read_bytes() for path in sorted(args.photos.glob("*.jpg"))]
    print(json.dumps(measure(args.model_dir, args.backend, photos, args.batches)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
