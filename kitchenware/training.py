"""Training: labelled images -> checked, split data -> two-phase fit -> evaluated model -> store.

`train(TrainConfig(...))` is the one entry point; `train.py` and the notebook call it.
A model reaches the BentoML store only after every step has succeeded.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kitchenware import MODEL_NAME
from kitchenware.metadata import (
    METADATA_FILENAME,
    MODEL_FILENAME,
    ModelMetadata,
    framework_versions,
)
from kitchenware.models import BACKBONES, DEFAULT_BACKBONE, BuiltModel
from kitchenware.preprocessing import PREPROCESSING_NAME

# The six classes of the Kaggle "Kitchenware Classification" competition.
KITCHENWARE_CLASSES = ("cup", "glass", "plate", "spoon", "fork", "knife")
ANY_CLASSES = "any"
# Run-directory files copied next to an exported model (saved_model/ ships them).
EXPORTED_EXTRAS = ("metrics.json", "history.json", "training_curves.png", "confusion_matrix.png")


class TrainConfig(BaseModel):
    """Every training option; field descriptions are the CLI's --help text."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(
        description="dataset root: Kaggle layout (train.csv + images/) or one folder per class"
    )
    classes: str = Field(
        ",".join(KITCHENWARE_CLASSES),
        description="comma-separated labels the data may use; 'any' accepts whatever labels it has",
    )
    backbone: str = Field(DEFAULT_BACKBONE, description=f"one of {', '.join(BACKBONES)}")
    image_size: int | None = Field(
        None,
        ge=32,
        description="square input side in px; "
        "default: the backbone's (xception 299, mobilenetv3small "
        "224, efficientnetv2b0 224, scratch 128)",
    )
    weights: str = Field(
        "imagenet",
        description="backbone weights: imagenet (downloaded by "
        "Keras), none (random), or PATH to a .h5/.weights.h5 file of the "
        "backbone without top",
    )
    freeze_backbone: Literal["auto", "yes", "no"] = Field(
        "auto",
        description="freeze the backbone in phase 1; auto freezes pretrained "
        "weights and trains random ones",
    )
    epochs: int = Field(20, ge=1, description="phase 1 (head) epochs at most")
    fine_tune_epochs: int = Field(5, ge=0, description="phase 2 epochs at most; 0 skips it")
    fine_tune_layers: int = Field(
        40, ge=1, description="top backbone layers unfrozen in phase 2 (BatchNorm stays frozen)"
    )
    learning_rate: float = Field(1e-3, gt=0, description="phase 1 Adam learning rate")
    fine_tune_learning_rate: float = Field(1e-5, gt=0, description="phase 2 learning rate")
    batch_size: int = Field(32, ge=1, description="images per training step")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout rate in the head")
    inner_size: int = Field(
        0, ge=0, description="units of the head's inner Dense layer; 0 for none"
    )
    patience: int = Field(
        5, ge=1, description="early stopping: epochs without a better val_accuracy"
    )
    lr_patience: int = Field(
        2,
        ge=1,
        description="epochs without a better val_loss before the learning rate is cut to 0.3x",
    )
    target_accuracy: float | None = Field(
        None, gt=0, le=1, description="stop a phase once val_accuracy reaches this"
    )
    flip: bool = Field(False, description="augment: random horizontal flips")
    rotation: float = Field(
        0.0, ge=0, le=0.5, description="augment: random rotation, fraction of a full turn"
    )
    zoom: float = Field(0.0, ge=0, lt=1, description="augment: random zoom fraction")
    contrast: float = Field(0.0, ge=0, le=1, description="augment: random contrast fraction")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="share of each class for validation")
    test_fraction: float = Field(
        0.15, gt=0, lt=1, description="share of each class for the held-out test"
    )
    seed: int = Field(42, description="seed for the split, initialisation and shuffling")
    skip_bad: bool = Field(
        False, description="leave out files the data check finds unusable instead of stopping"
    )
    cache_features: bool = Field(
        True,
        description="with a frozen backbone and no augmentation, compute backbone features once",
    )
    run_dir: Path | None = Field(
        None, description="run directory; default runs/<timestamp>-<backbone>"
    )
    save_to_store: bool = Field(True, description="save the model into the BentoML store")
    export: Path | None = Field(
        None,
        description="also write model.keras, metadata.json, metrics and plots into this directory",
    )
    model_name: str = Field(
        MODEL_NAME,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="name of the model in the BentoML store",
    )

    @model_validator(mode="after")
    def _fractions_leave_training_images(self) -> TrainConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"--val-fraction {self.val_fraction} + --test-fraction {self.test_fraction} "
                "must stay below 1 to leave images for training"
            )
        return self

    def allowed_labels(self) -> list[str] | None:
        if self.classes.strip().lower() == ANY_CLASSES:
            return None
        return [name.strip() for name in self.classes.split(",") if name.strip()]

    def resolved_run_dir(self) -> Path:
        if self.run_dir is not None:
            return self.run_dir
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{stamp}-{self.backbone}"


@dataclass
class TrainResult:
    run_dir: Path
    tag: str | None  # BentoML tag, None when save_to_store is off
    metrics: dict[str, Any]
    metadata: ModelMetadata
    export_dir: Path | None


def train(config: TrainConfig) -> TrainResult:
    """Run every step; raises DataError / ModelConfigError with a one-sentence message."""
    from kitchenware import models
    from kitchenware.data import dataset_fingerprint, discover_dataset, split_dataset, write_split
    from kitchenware.datacheck import check_dataset, require_clean

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
    _write_json(recorded_config, run_dir / "config.json")
    _write_json(report.to_dict(), run_dir / "data_report.json")
    write_split(split, run_dir / "split.csv", root=dataset.root)
    print(
        f"Split: {len(split.train)} train, {len(split.val)} val, {len(split.test)} test "
        f"-> {run_dir / 'split.csv'}"
    )

    from kitchenware.phases import evaluate_model, run_phases

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
    from kitchenware.store import export_model, save_model_dir

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


def _write_json(data: Any, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
