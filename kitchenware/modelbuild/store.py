"""The BentoML model store: save a trained model, export it, import an exported one.

Uses the BentoML 1.4 API (`bentoml.models.create`), not the deprecated `bentoml.keras`.
A model is a directory holding `model.keras` and `metadata.json`; the same pair is what
`saved_model/` ships and what `export_model` writes. OpenVINO artifacts made at import
(`openvino/`, `runtimes.json`, see runtime/artifacts) travel with it into the store.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kitchenware import MODEL_NAME
from kitchenware.runtime.artifacts import OPENVINO_DIR, RUNTIMES_FILENAME, has_current_manifest
from kitchenware.runtime.files import file_sha256
from kitchenware.runtime.metadata import (
    METADATA_FILENAME,
    MODEL_FILENAME,
    ModelMetadata,
    read_metadata,
    write_metadata,
)

SHA_LABEL = "model_sha256"  # label that makes importing the same file twice a no-op


def _store_labels(metadata: ModelMetadata, sha256: str) -> dict[str, str]:
    return {**metadata.labels(), SHA_LABEL: sha256[:16]}


def save_model_dir(source_dir: Path, name: str = MODEL_NAME) -> str:
    """Copy a model directory (model.keras + metadata.json) into the store; returns the tag.

    Nothing is left in the store when this fails: `bentoml.models.create` removes its
    directory on an exception inside the block.
    """
    import bentoml

    source_dir = Path(source_dir)
    metadata = read_metadata(source_dir)
    model_file = source_dir / MODEL_FILENAME
    if not model_file.is_file():
        raise ValueError(f"No model file at {model_file}.")
    sha256 = file_sha256(model_file)
    with bentoml.models.create(
        name,
        labels=_store_labels(metadata, sha256),
        metadata=metadata.model_dump(mode="json"),
    ) as ref:
        shutil.copy2(model_file, ref.path_of(MODEL_FILENAME))
        write_metadata(metadata, Path(ref.path))
        copy_runtime_artifacts(source_dir, Path(ref.path))
    return str(ref.tag)


def copy_runtime_artifacts(source_dir: Path, target_dir: Path) -> list[str]:
    """Copy the OpenVINO IR and runtimes.json made at import (modelbuild/conversion), if any."""
    copied = []
    if (source_dir / OPENVINO_DIR).is_dir():
        shutil.copytree(source_dir / OPENVINO_DIR, target_dir / OPENVINO_DIR)
        copied.append(OPENVINO_DIR)
    if (source_dir / RUNTIMES_FILENAME).is_file():
        shutil.copy2(source_dir / RUNTIMES_FILENAME, target_dir / RUNTIMES_FILENAME)
        copied.append(RUNTIMES_FILENAME)
    return copied


def export_model(model: Any, metadata: ModelMetadata, directory: Path) -> Path:
    """Write model.keras and metadata.json into `directory` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILENAME)
    write_metadata(metadata, directory)
    return directory


def find_imported(sha256: str, name: str = MODEL_NAME) -> str | None:
    """Tag of a stored model whose file has this hash, if any."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        stored_models = bentoml.models.list(name)
    except NotFound:  # no model of that name yet
        return None
    for stored in stored_models:
        if stored.info.labels.get(SHA_LABEL) == sha256[:16]:
            return str(stored.tag)
    return None


def import_model_dir(source_dir: Path, name: str = MODEL_NAME) -> tuple[str, bool]:
    """Import an exported model directory; returns (tag, created). Idempotent by file hash."""
    source_dir = Path(source_dir)
    model_file = source_dir / MODEL_FILENAME
    if not model_file.is_file():
        raise ValueError(f"No {MODEL_FILENAME} in {source_dir}: pass the folder that holds it.")
    if not (source_dir / METADATA_FILENAME).is_file():
        raise ValueError(
            f"No {METADATA_FILENAME} beside {model_file}: the model needs its metadata."
        )
    existing = find_imported(file_sha256(model_file), name)
    brings_artifacts = (source_dir / RUNTIMES_FILENAME).is_file()
    if existing is not None and (not brings_artifacts or has_current_manifest(model_dir(existing))):
        return existing, False  # a copy without (current) runtime artifacts gets a new entry

    return save_model_dir(source_dir, name), True


def model_dir(tag: str) -> Path:
    """Directory of a stored model, for `Classifier.load`."""
    import bentoml

    return Path(bentoml.models.get(tag).path)
