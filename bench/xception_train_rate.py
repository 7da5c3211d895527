"""How fast `train.py`'s default recipe (Xception 299 px, ImageNet weights) runs here.

Measures the two costs that dominate a real run, on random 299 px images through the same
`build_model` / `unfreeze_top_layers` code train.py uses:
- phase 1: one frozen-backbone feature pass (images/s, batch 32), done once per run;
- phase 2: fine-tuning steps with the top 40 layers unfrozen (images/s, batch 32).
Then extrapolates to the Kaggle train set (5,559 images; 70/15/15 split).

    .venv/bin/python bench/xception_train_rate.py --batches 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
KAGGLE_TRAIN_IMAGES = 5559


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    import keras
    import tensorflow as tf

    from kitchenware.training.models import build_model, unfreeze_top_layers

    built = build_model("xception", 6, image_size=299, weights="imagenet")
    batch = np.random.default_rng(0).uniform(0, 255, (args.batch_size, 299, 299, 3))
    batch = batch.astype(np.float32)
    labels = keras.utils.to_categorical(np.arange(args.batch_size) % 6, 6)
    features = tf.function(lambda x: built.feature_extractor(x, training=False))
    features(batch)  # trace
    started = time.perf_counter()
    for _ in range(args.batches):
        features(batch)
    feature_rate = args.batches * args.batch_size / (time.perf_counter() - started)

    unfreeze_top_layers(built, 40)
    built.model.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy")
    built.model.train_on_batch(batch, labels)  # trace
    started = time.perf_counter()
    for _ in range(args.batches):
        built.model.train_on_batch(batch, labels)
    tune_rate = args.batches * args.batch_size / (time.perf_counter() - started)

    train_val = int(KAGGLE_TRAIN_IMAGES * 0.85)
    train = int(KAGGLE_TRAIN_IMAGES * 0.70)
    val = train_val - train
    phase1_s = KAGGLE_TRAIN_IMAGES / feature_rate  # train + val + test features once
    epoch2_s = train / tune_rate + val / feature_rate
    report = {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "feature_pass_images_per_s": round(feature_rate, 1),
        "fine_tune_images_per_s": round(tune_rate, 1),
        "estimate_phase1_min": round(phase1_s / 60, 1),
        "estimate_fine_tune_epoch_min": round(epoch2_s / 60, 1),
        "estimate_default_run_min": round((phase1_s + 5 * epoch2_s) / 60, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
