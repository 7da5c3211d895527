"""Every training option in one pydantic model, TrainConfig: the CLI and the notebook use it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kitchenware import TRAINED_MODEL_NAME
from kitchenware.runtime.metadata import KITCHENWARE_CLASSES
from kitchenware.training.backbones import BACKBONES, DEFAULT_BACKBONE

ANY_CLASSES = "any"


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
        "Keras; offline, xception takes the verified ImageNet base of the published "
        "kitchenware model), none (random), or PATH to a .h5/.weights.h5 file of the "
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
        TRAINED_MODEL_NAME,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="name of the model in the BentoML store (not the demo's `kitchenware` "
        "nor the published `kitchenware-xception`, unless asked)",
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
