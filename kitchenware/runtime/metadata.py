"""The one metadata schema: written when a model is saved, read when it is served."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

METADATA_FILENAME = "metadata.json"  # sits next to every model file, in the store and exported
MODEL_FILENAME = "model.keras"
SCHEMA_VERSION = 1
# The six labels of the Kaggle "Kitchenware Classification" competition; a model's own output
# order is its metadata's class_names, never this tuple.
KITCHENWARE_CLASSES = ("cup", "glass", "plate", "spoon", "fork", "knife")


class ModelMetadata(BaseModel):
    """Everything the service and a re-import need to use a model without its training run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    class_names: list[str] = Field(min_length=2, description="Class names in output order.")
    image_size: int = Field(ge=8, description="Square input side in pixels.")
    preprocessing: str = Field(
        description="Name of the preprocessing in kitchenware.runtime.preprocessing."
    )
    backbone: str
    training_config: dict[str, Any] = Field(default_factory=dict)
    dataset_fingerprint: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    framework_versions: dict[str, str] = Field(default_factory=dict)
    # Where a model not trained here comes from (package, version, hashes, licence).
    provenance: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def labels(self) -> dict[str, str]:
        """Short string labels for `bentoml models list`."""
        return {
            "backbone": self.backbone,
            "image_size": str(self.image_size),
            "classes": str(self.num_classes),
        }


def write_metadata(metadata: ModelMetadata, directory: Path) -> Path:
    path = Path(directory) / METADATA_FILENAME
    path.write_text(json.dumps(metadata.model_dump(mode="json"), indent=2) + "\n")
    return path


def read_metadata(directory: Path) -> ModelMetadata:
    """Read the metadata file in `directory`; a missing or invalid file is a ValueError."""
    path = Path(directory) / METADATA_FILENAME
    if not path.is_file():
        raise ValueError(
            f"No model metadata at {path}: expected {METADATA_FILENAME} beside the model."
        )
    try:
        return ModelMetadata.model_validate_json(path.read_text())
    except ValueError as exc:
        raise ValueError(f"Model metadata {path} is invalid: {exc}") from exc


class MetadataBacked:
    """What every loaded model (any backend) answers from its metadata alone."""

    metadata: ModelMetadata

    @property
    def class_names(self) -> list[str]:
        return self.metadata.class_names

    @property
    def image_size(self) -> int:
        return self.metadata.image_size


def read_servable_metadata(directory: Path | str) -> ModelMetadata:
    """Metadata of a model directory whose preprocessing this code implements, else ValueError."""
    from kitchenware.runtime.preprocessing import PREPROCESSING_NAME

    metadata = read_metadata(Path(directory))
    if metadata.preprocessing != PREPROCESSING_NAME:
        raise ValueError(
            f"Model in {directory} was made with preprocessing {metadata.preprocessing!r}, "
            f"but this code implements {PREPROCESSING_NAME!r}."
        )
    return metadata
