"""One training run, `train(config)`: checked, split data -> two-phase fit -> evaluation -> store.

`train(TrainConfig(...))` is the one entry point; `train.py` and the notebook call it.
A model reaches the BentoML store only after every step has succeeded.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitchenware.modelbuild.versions import framework_versions
from kitchenware.runtime.files import write_json
from kitchenware.runtime.metadata import (
    METADATA_FILENAME,
    MODEL_FILENAME,
    ModelMetadata,
)
from kitchenware.runtime.preprocessing import PREPROCESSING_NAME
from kitchenware.training.config import TrainConfig
from kitchenware.training.models import BuiltModel

# Run-directory files copied next to an exported model (saved_model/ ships them).
EXPORTED_EXTRAS = ("metrics.json", "history.json", "training_curves.png", "confusion_matrix.png")


@dataclass
class TrainResult:
    run_dir: Path
    tag: str | None  # BentoML tag, None when save_to_store is off
    metrics: dict[str, Any]
    metadata: ModelMetadata
    export_dir: Path | None


def train(config: TrainConfig) -> TrainResult:
    """Run every step; raises DataError / ModelConfigError with a one-sentence message."""
    from kitchenware.training import models
    from kitchenware.training.data import (
        dataset_fingerprint,
        discover_dataset,
        split_dataset,
        write_split,
    )
    from kitchenware.training.datacheck import check_dataset, require_clean

    # Cheap checks first, so a typo fails before minutes of image decoding.
    image_size = models.resolve_image_size(config.backbone, config.image_size)
    models.check_weights(config.backbone, config.weights)

    dataset = discover_dataset(config.data, allowed_labels=config.allowed_labels())
    report = check_dataset(dataset)
    print(report.format_table())
    excluded = require_clean(report, config.skip_bad)
    if excluded:
        print(f"Leaving out {len(excluded)} file(s) the data check flagged (see table above).")
    samples = [sample for sample in dataset.samples if sample.path not in excluded]
    split = split_dataset(
        samples,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    fingerprint = dataset_fingerprint(
        samples, root=dataset.root, content_hashes=report.content_hashes
    )

    import keras

    keras.utils.set_random_seed(config.seed)
    freeze = {"auto": None, "yes": True, "no": False}[config.freeze_backbone]
    built = models.build_model(
        config.backbone,
        len(dataset.class_names),
        image_size=image_size,
        weights=config.weights,
        freeze_backbone=freeze,
        dropout=config.dropout,
        inner_size=config.inner_size,
        augmentation=models.AugmentationConfig(
            flip=config.flip, rotation=config.rotation, zoom=config.zoom, contrast=config.contrast
        ),
        seed=config.seed,
    )

    run_dir = config.resolved_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    # Unset options are left out: BentoML's model metadata rejects None values.
    recorded_config = {
        **config.model_dump(mode="json", exclude_none=True),
        "image_size": image_size,
        "run_dir": str(run_dir),
    }
    write_json(recorded_config, run_dir / "config.json")
    write_json(report.to_dict(), run_dir / "data_report.json")
    write_split(split, run_dir / "split.csv", root=dataset.root)
    print(
        f"Split: {len(split.train)} train, {len(split.val)} val, {len(split.test)} test "
        f"-> {run_dir / 'split.csv'}"
    )

    from kitchenware.training.evaluation import evaluate_model
    from kitchenware.training.phases import run_phases

    phases = run_phases(built, split, dataset.class_names, config, run_dir)
    metrics = evaluate_model(
        built, split, dataset.class_names, phases, run_dir, batch_size=config.batch_size
    )
    metadata = ModelMetadata(
        class_names=list(dataset.class_names),
        image_size=image_size,
        preprocessing=PREPROCESSING_NAME,
        backbone=config.backbone,
        training_config=recorded_config,
        dataset_fingerprint=fingerprint,
        metrics=metrics,
        framework_versions=framework_versions(),
    )
    return _save_outputs(built, metadata, config, run_dir)


def _save_outputs(
    built: BuiltModel, metadata: ModelMetadata, config: TrainConfig, run_dir: Path
) -> TrainResult:
    """Model dir in the run dir -> BentoML store -> optional export, in that order."""
    from kitchenware.modelbuild.store import export_model, save_model_dir

    model_dir = export_model(built.model, metadata, run_dir / "model")
    tag = save_model_dir(model_dir, name=config.model_name) if config.save_to_store else None
    export_dir = None
    if config.export is not None:
        export_dir = Path(config.export)
        export_dir.mkdir(parents=True, exist_ok=True)
        for name in (MODEL_FILENAME, METADATA_FILENAME):
            shutil.copy2(model_dir / name, export_dir / name)
        for name in EXPORTED_EXTRAS:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, export_dir / name)
    return TrainResult(
        run_dir=run_dir, tag=tag, metrics=metadata.metrics, metadata=metadata, export_dir=export_dir
    )
