"""Refuse to start on an unusable model: one sentence that names the file, exit code 2.

Without this, a missing model, a truncated `model.keras` or a wrong `metadata.json` made
every worker crash at start-up and the process supervisor restart it, a traceback every
few seconds and never a ready server. `check_model_dir` reads only files (no TensorFlow):
the metadata against its schema and this service's preprocessing, every member of the
.keras zip against its CRC, the model's input size against the metadata, and the runtime
manifest with the IR files it lists. service.py calls `refuse_unusable_model` at import,
so `bentoml serve` stops before it spawns a worker.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kitchenware.runtime.artifacts import RUNTIMES_FILENAME, read_manifest
from kitchenware.runtime.metadata import (
    METADATA_FILENAME,
    MODEL_FILENAME,
    ModelMetadata,
    read_metadata,
)
from kitchenware.runtime.preprocessing import PREPROCESSING_NAME

EXIT_MODEL_UNUSABLE = 2


class ModelUnusable(Exception):
    """A model the service cannot serve; the message is one sentence naming the file."""


def _invalid(named: str, path: Path, exc: ValueError) -> ModelUnusable:
    """One line for a file that failed its schema: the first few field errors, no URLs."""
    cause = exc.__cause__
    if isinstance(cause, ValidationError):
        details = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'document'}: {error['msg']}"
            for error in cause.errors()[:3]
        )
        return ModelUnusable(f"{named}: {path} is invalid ({details}).")
    return ModelUnusable(f"{named}: {exc}".rstrip(".") + ".")


def _input_size(config: dict[str, Any]) -> int | None:
    """The square input side from a Keras 3 config.json, if it declares one."""
    for layer in config.get("config", {}).get("layers", []):
        if layer.get("class_name") == "InputLayer":
            shape = layer.get("config", {}).get("batch_shape") or []
            if len(shape) == 4 and shape[1] == shape[2] and isinstance(shape[1], int):
                return int(shape[1])
    return None


def check_keras_file(path: Path, metadata: ModelMetadata) -> None:
    if not path.is_file():
        raise ModelUnusable(f"The model file {path} is missing.")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()  # reads every member and checks its CRC
            if broken is not None:
                raise ModelUnusable(f"The model file {path} is corrupt (member {broken}).")
            config = json.loads(archive.read("config.json"))
    except ModelUnusable:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ModelUnusable(
            f"The model file {path} is not a readable .keras archive ({exc})."
        ) from exc
    size = _input_size(config)
    if size is not None and size != metadata.image_size:
        raise ModelUnusable(
            f"The model file {path} takes {size} px inputs but its metadata.json says "
            f"image_size {metadata.image_size}."
        )


def check_model_dir(directory: Path, tag: str = "") -> ModelMetadata:
    """The model's metadata if every file the service reads is sound, else ModelUnusable."""
    named = f"Model {tag}" if tag else "The model"
    try:
        metadata = read_metadata(directory)
    except ValueError as exc:  # missing or invalid: the message names the file
        raise _invalid(named, directory / METADATA_FILENAME, exc) from None
    if metadata.preprocessing != PREPROCESSING_NAME:
        raise ModelUnusable(
            f"{named}: {directory / 'metadata.json'} names preprocessing "
            f"{metadata.preprocessing!r}, but this service applies {PREPROCESSING_NAME!r}."
        )
    check_keras_file(directory / MODEL_FILENAME, metadata)
    try:
        manifest = read_manifest(directory)
    except ValueError as exc:
        raise _invalid(named, directory / RUNTIMES_FILENAME, exc) from None
    for backend, record in (manifest.artifacts if manifest else {}).items():
        xml = directory / record.ir_path
        weights = xml.with_suffix(".bin")
        for needed in (xml, weights):
            if not needed.is_file() or needed.stat().st_size == 0:
                raise ModelUnusable(
                    f"{named}: {needed} (the {backend} runtime in runtimes.json) is missing "
                    "or empty."
                )
    return metadata


def locate_checked(reference: Any) -> Path:
    """The stored model directory of a `bentoml.models.BentoModel`, checked."""
    stored = reference.stored
    if stored is None:
        home = os.environ.get("BENTOML_HOME", "~/bentoml")
        raise ModelUnusable(
            f"Model {reference.tag} is not in the BentoML store ({home}/models); import one "
            "with `make serve` or set KITCHENWARE_MODEL_TAG to a tag from "
            "`bentoml models list`."
        )
    directory = Path(stored.path)
    check_model_dir(directory, str(stored.tag))
    return directory


def refuse_unusable_model(reference: Any) -> None:
    """Exit with one line on stderr (code 2) when the model cannot be served."""
    try:
        locate_checked(reference)
    except ModelUnusable as exc:
        sys.stderr.write(f"kitchenware: refusing to start: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_MODEL_UNUSABLE) from None
