"""Head training with and without cached backbone features (Xception, 299 px), side by side.

Runs phase 1 exactly as train.py does (kitchenware.training.phases.run_phases: same callbacks,
checkpoints and tf.data pipeline) twice on the same generated images and the same initial
weights: once computing the frozen backbone's features once, once pushing every image
through the backbone every epoch. Prints both wall times, their ratio and the machine.

    .venv/bin/python bench/head_cache.py --images 96 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from kitchenware.training.config import TrainConfig
from kitchenware.training.data import discover_dataset, split_dataset
from kitchenware.training.demo.generator import DEMO_CLASSES, generate_demo_dataset


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_head_phase(
    data: Path, run_dir: Path, *, cached: bool, args: argparse.Namespace
) -> tuple[float, int, int]:
    """Seconds for phase 1, and the train / validation image counts."""
    import keras

    from kitchenware.training.models import build_model
    from kitchenware.training.phases import run_phases

    config = TrainConfig(
        data=data,
        backbone="xception",
        image_size=args.size,
        weights="none",
        freeze_backbone="yes",
        epochs=args.epochs,
        fine_tune_epochs=0,
        patience=args.epochs + 1,
        batch_size=args.batch_size,
        cache_features=cached,
        val_fraction=0.2,
        test_fraction=0.01,
        seed=0,
        save_to_store=False,
    )
    dataset = discover_dataset(data)
    split = split_dataset(dataset.samples, val_fraction=0.2, test_fraction=0.01, seed=0)
    keras.utils.set_random_seed(0)  # same initial weights for both runs
    built = build_model(
        "xception",
        len(dataset.class_names),
        image_size=args.size,
        weights="none",
        freeze_backbone=True,
    )
    start = time.perf_counter()
    run_phases(built, split, dataset.class_names, config, run_dir)
    return time.perf_counter() - start, len(split.train), len(split.val)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--images", type=int, default=96, help="training images (all classes)")
    parser.add_argument("--epochs", type=int, default=3, help="head epochs")
    parser.add_argument("--size", type=int, default=299, help="image side in px")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="head-cache-") as tmp:
        # 80 % of the generated images train, 20 % validate, as phase 1 needs both.
        per_class = round(args.images / len(DEMO_CLASSES) / 0.8) + 1  # +1: one test image
        data = generate_demo_dataset(
            Path(tmp) / "data", per_class=per_class, seed=0, progress=False
        )
        load_before = os.getloadavg()
        cached, n_train, n_val = time_head_phase(data, Path(tmp) / "c", cached=True, args=args)
        uncached, _, _ = time_head_phase(data, Path(tmp) / "u", cached=False, args=args)
        load_after = os.getloadavg()

    print()
    print(
        f"Head phase, Xception at {args.size} px, weights none, {args.epochs} epochs, "
        f"{n_train} training + {n_val} validation images, batch {args.batch_size}"
    )
    print(f"  machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"  load average before/after: {load_before[0]:.1f} / {load_after[0]:.1f}")
    print(f"  cached features (backbone once, head {args.epochs} epochs): {cached:8.1f} s")
    print(f"  no cache (backbone every epoch):                  {uncached:8.1f} s")
    print(f"  ratio (no cache / cached): {uncached / cached:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
