"""Does a model's int8 gate result depend on the calibration images? (issue 20 x 16)

Quantizes each given model (an exported model dir: model.keras + metadata.json) with NNCF on
several calibration sets drawn like the import's (`photo_sets`: 8 random crops of each real
photo + mirrors, 288 images) but from other seeds, and on a 576-image set, then gates every
int8 IR against the model's own Keras fp32 output on the import's gate set (seed 1, 306
images). Prints one JSON line per (model, calibration) and a table.

    python bench/int8_calibration.py MODEL_DIR [MODEL_DIR ...] [--seeds 0 10 20] [--big]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from kitchenware.modelbuild.conversion import (
    ImageSet,
    convert_to_ir,
    photo_sets,
    quantize_int8,
    random_crops,
    reference_probabilities,
)
from kitchenware.modelbuild.pretrained import real_photos
from kitchenware.runtime.artifacts import OPENVINO_INT8, PRECISION_OF_BACKEND, gate_result
from kitchenware.runtime.metadata import read_metadata
from kitchenware.runtime.openvino_backend import compile_ir


def calibration_set(paths: list[Path], per_photo: int, size: int, seed: int) -> ImageSet:
    images, names = random_crops(paths, per_photo, size, seed, include_whole=False, mirrored=True)
    return ImageSet(images, names=names, description={"seed": seed, "per_photo": per_photo})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 10, 20])
    parser.add_argument("--big", action="store_true", help="also 16 crops + mirrors (576)")
    parser.add_argument("--fp32-types", nargs="*", default=[], help="e.g. MatMul: head in fp32")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args()
    import openvino as ov

    photos = real_photos()
    paths = [photos.path(pid) for pid in photos.ids]
    for model_dir in args.models:
        size = read_metadata(model_dir).image_size
        _, gate = photo_sets(paths, {}, size)
        gate_bytes = {image.tobytes() for image in gate.images}
        reference = reference_probabilities(model_dir, gate)
        ordered = np.sort(reference, axis=1)
        margin = ordered[:, -1] - ordered[:, -2]
        fp32, _ = convert_to_ir(model_dir)
        variants = [(8, seed) for seed in args.seeds] + ([(16, 0)] if args.big else [])
        for per_photo, seed in variants:
            calibration = calibration_set(paths, per_photo, size, seed)
            overlap = sum(image.tobytes() in gate_bytes for image in calibration.images)
            started = time.perf_counter()
            int8, _ = quantize_int8(fp32, calibration)
            with tempfile.TemporaryDirectory(prefix="int8-calibration-") as folder:
                ir = Path(folder) / "model.xml"
                ov.save_model(int8, str(ir), compress_to_fp16=False)  # as the import does
                compiled = compile_ir(ir, PRECISION_OF_BACKEND[OPENVINO_INT8])
            candidate = np.concatenate(
                [compiled(gate.images[i : i + 16])[0] for i in range(0, len(gate.images), 16)]
            )
            result = gate_result("openvino-int8", reference, candidate, None, gate.names)
            row = {
                "model": str(model_dir),
                "calibration": f"{len(calibration.images)} (seed {seed})",
                "overlap_with_gate": overlap,
                "passed": result.passed,
                "decisive": result.decisive_images,
                "flips": len(result.decisive_disagreements),
                "agreement": round(result.decisive_agreement or 0.0, 4),
                "mean_dp": round(result.mean_abs_probability_diff, 4),
                "worst_dp": round(result.max_abs_probability_diff, 3),
                # fp32's own margin (top-1 minus second) on each image int8 flipped
                "flipped_margins": {
                    name: round(float(margin[gate.names.index(name)]), 3)
                    for name in result.decisive_disagreements
                },
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(json.dumps(row), flush=True)
            if args.out:
                with args.out.open("a") as out:
                    out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
