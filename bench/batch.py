"""Batch scoring throughput: predict.py's local engine vs the raw model vs a naive loop.

One run, interleaved round by round so all three see the same background load:
- raw: the backend's own `predict_arrays` on already-decoded arrays, batch B (the ceiling);
- engine: `kitchenware.batch.run.score` on the files (what predict.py does: parallel decode,
  batched inference, the journal, the final CSV), same backend, same batch size;
- naive: per file, read + preprocess + Keras `model.predict(x[None])` (what the seed
  projects do), on a subset (it is slow).

The files are the package's 18 real Kaggle photos (~750x1000 JPEGs), copied to N files.

    .venv/bin/python bench/batch.py --copies 8 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "batch"


def photo_files(copies: int) -> list[Path]:
    """The 18 real photos, each written `copies` times (distinct names) under bench/out."""
    from kitchenware.core.pretrained import real_photos

    photos = real_photos()
    folder = OUT / "photos"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = []
    for copy in range(copies):
        for photo_id in photos.ids:
            target = folder / f"{photo_id}-{copy:02d}.jpg"
            shutil.copyfile(photos.path(photo_id), target)
            files.append(target)
    return files


def default_model_dir() -> Path:
    """The published Xception from the store (imported once if missing)."""
    from kitchenware.core.pretrained import import_pretrained
    from kitchenware.core.store import model_dir

    return model_dir(import_pretrained().tag)


def measure_raw(backend: Any, arrays: np.ndarray, batch_size: int) -> float:
    count = len(arrays)
    started = time.perf_counter()
    for start in range(0, count, batch_size):
        backend.predict_arrays(arrays[start : start + batch_size])
    return count / (time.perf_counter() - started)


def measure_engine(files: list[Path], model_dir: Path, backend: str, batch_size: int) -> dict:
    from kitchenware.batch.inputs import discover
    from kitchenware.batch.local import LocalOptions
    from kitchenware.batch.run import RunOptions, score

    out = OUT / "submission.csv"
    options = RunOptions(
        out=out,
        backend=backend,
        restart=True,
        progress=False,
        local=LocalOptions(batch_size=batch_size),
    )
    summary = score(discover(str(files[0].parent)), model_dir, "bench", options)
    assert not summary.failures, summary.failures
    return {"rate": summary.rate, "seconds": summary.seconds, "backend": summary.backend}


def measure_naive(files: list[Path], keras_model: Any, image_size: int) -> float:
    from kitchenware.core.preprocessing import preprocess_bytes

    started = time.perf_counter()
    for path in files:
        x = preprocess_bytes(path.read_bytes(), image_size)
        keras_model.predict(x[None], verbose=0)
    return len(files) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="default: the published Xception")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--copies", type=int, default=8, help="copies of the 18 photos")
    parser.add_argument("--naive-files", type=int, default=36)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import keras

    from kitchenware.core.backends import load_backend
    from kitchenware.core.metadata import MODEL_FILENAME
    from kitchenware.core.preprocessing import preprocess_bytes

    load_start = os.getloadavg()
    model_dir = args.model_dir or default_model_dir()
    files = photo_files(args.copies)
    backend = load_backend(model_dir, args.backend)
    backend.warm_up()
    size = backend.image_size
    arrays = np.stack([preprocess_bytes(p.read_bytes(), size) for p in files])
    keras_model = keras.models.load_model(model_dir / MODEL_FILENAME, compile=False)
    keras_model.predict(arrays[:1], verbose=0)
    naive_files = files[: args.naive_files]

    rounds = []
    for index in range(args.rounds):
        raw = measure_raw(backend, arrays, args.batch_size)
        engine = measure_engine(files, model_dir, args.backend, args.batch_size)
        naive = measure_naive(naive_files, keras_model, size)
        rounds.append({"raw": raw, "engine": engine["rate"], "naive": naive})
        print(
            f"round {index + 1}: raw {raw:.1f} img/s, engine {engine['rate']:.1f} img/s "
            f"({engine['rate'] / raw:.2f}x raw), naive {naive:.1f} img/s",
            file=sys.stderr,
        )
    report = {
        "model_dir": str(model_dir),
        "backend": backend.runtime_info(),
        "engine_backend": engine["backend"],
        "image_size": size,
        "files": len(files),
        "naive_files": len(naive_files),
        "batch_size": args.batch_size,
        "decoders": os.cpu_count(),
        "rounds": rounds,
        "median": {
            key: statistics.median(r[key] for r in rounds) for key in ("raw", "engine", "naive")
        },
        "engine_over_raw": [r["engine"] / r["raw"] for r in rounds],
        "engine_over_naive": [r["engine"] / r["naive"] for r in rounds],
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
