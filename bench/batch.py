"""Batch scoring throughput: predict.py's local engine vs the raw model vs a naive loop.

One run. The files are cut into rounds; in each round the three measure in turn on that
round's files, so all three see the same background load, and each rate is the total over
all rounds (images / seconds):
- raw: the backend's own `predict_arrays` on already-decoded arrays, batch B (the ceiling);
- engine: `kitchenware.batch.run.score` on the files (what predict.py does: parallel decode,
  batched inference, the journal, the final CSV), same backend, same batch size;
- naive: per file, read + preprocess + Keras `model.predict(x[None])` (what the seed
  projects do), on the first few files of each round (it is slow).

The files are the package's 18 real Kaggle photos (~750x1000 JPEGs), copied to N files.
The engine and the raw rate share one loaded backend (`score(..., backend=...)`).

    .venv/bin/python bench/batch.py --openvino --rounds 8 --round-files 36
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "batch"


def photo_rounds(rounds: int, per_round: int) -> list[list[Path]]:
    """`rounds` folders of `per_round` files, cycling through the 18 real photos."""
    from kitchenware.modelbuild.pretrained import real_photos

    photos = real_photos()
    shutil.rmtree(OUT / "photos", ignore_errors=True)
    folders = []
    for index in range(rounds):
        folder = OUT / "photos" / f"round-{index:02d}"
        folder.mkdir(parents=True)
        files = []
        for number in range(per_round):
            photo_id = photos.ids[(index * per_round + number) % len(photos.ids)]
            target = folder / f"{number:03d}-{photo_id}.jpg"
            shutil.copyfile(photos.path(photo_id), target)
            files.append(target)
        folders.append(files)
    return folders


def default_model_dir() -> Path:
    """The published Xception from the store (imported once if missing)."""
    from kitchenware.modelbuild.pretrained import import_pretrained
    from kitchenware.modelbuild.store import model_dir

    return model_dir(import_pretrained().tag)


def openvino_model_dir(source: Path) -> Path:
    """A copy of `source` with gated OpenVINO artifacts (made once, as an import makes them)."""
    from kitchenware.modelbuild.conversion import build_runtime_artifacts, photo_sets
    from kitchenware.modelbuild.pretrained import real_photos
    from kitchenware.runtime.artifacts import read_manifest
    from kitchenware.runtime.metadata import read_metadata

    target = OUT / "model-openvino"
    if read_manifest(target) is not None:
        return target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    photos = real_photos()
    metadata = read_metadata(target)
    labels = {f"{i}.jpg": metadata.class_names.index(c) for i, c in photos.labels.items()}
    calibration, gate = photo_sets(
        [photos.path(i) for i in photos.ids], labels, metadata.image_size
    )
    build_runtime_artifacts(target, calibration, gate)
    return target


def measure_raw(backend: Any, arrays: np.ndarray, batch_size: int) -> float:
    """Seconds for the backend alone over already-decoded arrays, batch by batch."""
    started = time.perf_counter()
    for start in range(0, len(arrays), batch_size):
        backend.predict_arrays(arrays[start : start + batch_size])
    return time.perf_counter() - started


def measure_engine(
    files: list[Path], model_dir: Path, backend: Any, name: str, batch_size: int
) -> float:
    """Seconds predict.py's scoring takes over the files (decode, infer, journal, CSV)."""
    from kitchenware.batch.inputs import discover
    from kitchenware.batch.local import LocalOptions
    from kitchenware.batch.run import RunOptions, score

    options = RunOptions(
        out=OUT / "submission.csv",
        backend=name,
        restart=True,
        progress=False,
        local=LocalOptions(batch_size=batch_size),
    )
    started = time.perf_counter()
    summary = score(discover(str(files[0].parent)), model_dir, "bench", options, backend)
    assert not summary.failures and summary.scored == len(files), summary.lines()
    return time.perf_counter() - started  # all of it, the final CSV included


def measure_naive(files: list[Path], keras_model: Any, image_size: int) -> float:
    from kitchenware.runtime.preprocessing import preprocess_bytes

    started = time.perf_counter()
    for path in files:
        x = preprocess_bytes(path.read_bytes(), image_size)
        keras_model.predict(x[None], verbose=0)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="default: the published Xception")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--round-files", type=int, default=36, help="files per round")
    parser.add_argument("--naive-files", type=int, default=9, help="naive loop files per round")
    parser.add_argument(
        "--openvino", action="store_true", help="add OpenVINO artifacts to a copy of the model"
    )
    args = parser.parse_args()

    import keras

    from kitchenware.runtime.backends import load_backend
    from kitchenware.runtime.metadata import MODEL_FILENAME
    from kitchenware.runtime.preprocessing import preprocess_bytes

    load_start = os.getloadavg()
    model_dir = args.model_dir or default_model_dir()
    if args.openvino:
        model_dir = openvino_model_dir(model_dir)
    rounds = photo_rounds(args.rounds, args.round_files)
    backend = load_backend(model_dir, args.backend)
    backend.warm_up()
    size = backend.image_size
    keras_model = keras.models.load_model(model_dir / MODEL_FILENAME, compile=False)
    keras_model.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)

    seconds = {"raw": 0.0, "engine": 0.0, "naive": 0.0}
    images = {"raw": 0, "engine": 0, "naive": 0}
    per_round = []
    for index, files in enumerate(rounds):
        arrays = np.stack([preprocess_bytes(p.read_bytes(), size) for p in files])
        raw = measure_raw(backend, arrays, args.batch_size)
        engine = measure_engine(files, model_dir, backend, args.backend, args.batch_size)
        naive = measure_naive(files[: args.naive_files], keras_model, size)
        for key, spent, count in (
            ("raw", raw, len(files)),
            ("engine", engine, len(files)),
            ("naive", naive, min(len(files), args.naive_files)),
        ):
            seconds[key] += spent
            images[key] += count
        per_round.append({"raw": len(files) / raw, "engine": len(files) / engine})
        print(
            f"round {index + 1}: raw {len(files) / raw:.1f} img/s, engine "
            f"{len(files) / engine:.1f} img/s ({raw / engine:.2f}x raw), naive "
            f"{min(len(files), args.naive_files) / naive:.1f} img/s, load {os.getloadavg()[0]:.1f}",
            file=sys.stderr,
        )
    rates = {key: images[key] / seconds[key] for key in seconds}
    report = {
        "command": " ".join(sys.argv),
        "model_dir": str(model_dir),
        "backend": backend.runtime_info(),
        "image_size": size,
        "batch_size": args.batch_size,
        "decoders": os.cpu_count(),
        "images": images,
        "seconds": seconds,
        "rates": rates,
        "engine_over_raw": rates["engine"] / rates["raw"],
        "engine_over_naive": rates["engine"] / rates["naive"],
        "per_round": per_round,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    name = backend.runtime_info().get("backend", args.backend)
    (OUT / f"report-{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
