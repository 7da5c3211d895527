"""What one request costs on top of the model: service vs raw, interleaved, at concurrency 1.

On a shared machine the raw batch-1 latency and the service's concurrency-1 latency drift
apart when measured minutes apart. Here they alternate request by request (A/B), so both
see the same background load: raw = decode + Classifier.predict_arrays in this process;
service = one POST /classify to `bentoml serve` (the TF threads of this process sit idle
while the server works).

    python bench/c1_overhead.py --pairs 40
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import MODEL_DIR, ensure_model_dir, load_jpeg_set, percentiles_ms
from servers import running_service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="kitchenware-c1-bentoml-"))
    os.environ["BENTOML_HOME"] = str(home)  # before anything imports bentoml
    try:
        images = load_jpeg_set()
        ensure_model_dir()
        from kitchenware.core.inference import Classifier
        from kitchenware.core.preprocessing import preprocess_bytes
        from kitchenware.core.store import import_model_dir

        classifier = Classifier.load(MODEL_DIR)
        classifier.warm_up()
        tag, _ = import_model_dir(MODEL_DIR)
        raw_s: list[float] = []
        served_s: list[float] = []
        with (
            running_service(tag, home, name="c1-overhead") as server,
            httpx.Client(timeout=60.0, trust_env=False) as client,
        ):
            url = server.base_url + "/classify"
            for index in range(args.pairs + 4):  # the first 4 pairs warm both paths up
                data = images[index % len(images)]
                start = time.perf_counter()
                classifier.predict_arrays(preprocess_bytes(data, classifier.image_size))
                raw = time.perf_counter() - start
                start = time.perf_counter()
                response = client.post(url, files={"image": ("x.jpg", data, "image/jpeg")})
                served = time.perf_counter() - start
                response.raise_for_status()
                if index >= 4:
                    raw_s.append(raw)
                    served_s.append(served)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    gaps_ms = [1000 * (s - r) for s, r in zip(served_s, raw_s, strict=True)]
    result = {
        "pairs": len(gaps_ms),
        "raw_decode_plus_predict_ms": percentiles_ms(raw_s),
        "service_ms": percentiles_ms(served_s),
        "gap_ms_median": statistics.median(gaps_ms),
        "gap_ms_p90": sorted(gaps_ms)[int(0.9 * (len(gaps_ms) - 1))],
        "loadavg_end": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
