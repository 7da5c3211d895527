"""Keras model -> OpenVINO IR (fp32, NNCF int8), gated against the Keras fp32 model.

Runs at import/build time (TensorFlow, OpenVINO and NNCF all loaded), never at serving
start. Path: `model.keras` -> `model.export()` (SavedModel) -> `openvino.convert_model`
-> dynamic batch -> fp32 IR; `nncf.quantize` of that IR on calibration images -> int8 IR.
NNCF 3.x quantizes OpenVINO models only (its TensorFlow backend is gone).

Calibration and gate images are passed in as arrays (modelbuild never imports training): for the
published model, random crops of its real photos, from disjoint photos; for a model trained
here, its training split (calibration) and validation split (gate).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware.runtime.artifacts import (
    OPENVINO_BF16,
    OPENVINO_DIR,
    OPENVINO_FP32,
    OPENVINO_INT8,
    PRECISION_OF_BACKEND,
    ArtifactRecord,
    GateResult,
    GateRule,
    RuntimeManifest,
    decisive_mask,
    gate_result,
    manifest_summary,
    write_manifest,
)
from kitchenware.runtime.metadata import MODEL_FILENAME, read_metadata
from kitchenware.runtime.openvino_backend import (
    compile_ir,
    cpu_description,
    cpu_supports_bf16,
    ir_path,
)
from kitchenware.runtime.preprocessing import decode_image, to_model_input
from kitchenware.runtime.startup_check import slice_indices, write_reference_slice

ALL_OPENVINO = (OPENVINO_FP32, OPENVINO_BF16, OPENVINO_INT8)
GATE_BATCH = 16


@dataclass
class ImageSet:
    """Images (n, size, size, 3) float32 in [0, 255], optional labels, and where they came from."""

    images: np.ndarray
    labels: list[int | None] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        if self.images.ndim != 4 or not len(self.images):
            raise ValueError(
                f"An image set needs (n, size, size, 3) images, got {self.images.shape}."
            )
        count = len(self.images)
        self.labels = self.labels or [None] * count
        self.names = self.names or [f"image[{i}]" for i in range(count)]
        if len(self.labels) != count or len(self.names) != count:
            raise ValueError("An image set needs one label (or None) and one name per image.")

    def summary(self) -> dict[str, Any]:
        labelled = sum(label is not None for label in self.labels)
        return {**self.description, "images": len(self.images), "labelled": labelled}


def random_crops(
    photos: Sequence[Path],
    per_photo: int,
    image_size: int,
    seed: int,
    *,
    include_whole: bool,
    mirrored: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Random square-ish crops (40-100 % of the short side) of real photos, model-sized.

    Uses the shared decode (so the pixels are the ones serving sees) and the model's resize.
    `mirrored`: every crop also goes in left-right flipped (calibration: crops + flips);
    otherwise each crop is flipped or not at random.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    arrays, names = [], []
    for photo in photos:
        image = decode_image(Path(photo).read_bytes(), name=str(photo))
        if include_whole:
            arrays.append(to_model_input(image, image_size))
            names.append(Path(photo).name)
        width, height = image.size
        for index in range(per_photo):
            side = int(min(width, height) * rng.uniform(0.4, 1.0))
            aspect = rng.uniform(0.8, 1.25)
            w, h = min(width, int(side * aspect)), min(height, int(side / aspect))
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            crop = image.crop((x, y, x + w, y + h))
            flip = rng.random() < 0.5
            variants = [(crop, ""), (crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "f")]
            for variant, suffix in variants if mirrored else [variants[int(flip)]]:
                arrays.append(to_model_input(variant, image_size))
                names.append(f"{Path(photo).name}#crop{index}{suffix}")
    return np.stack(arrays), names


CALIBRATION_SEED = 0
# NNCF advises ~300 calibration samples: 8 crops + their mirror images of each of the 18
# photos = 288. The gate: 16 other crops of each photo + each photo whole = 306 images.
CALIBRATION_CROPS_PER_PHOTO = 8
GATE_CROPS_PER_PHOTO = 16


def photo_sets(
    photos: Sequence[Path],
    labels: dict[str, int],
    image_size: int,
    *,
    calibration_per_photo: int = CALIBRATION_CROPS_PER_PHOTO,
    gate_per_photo: int = GATE_CROPS_PER_PHOTO,
    seed: int = CALIBRATION_SEED,
) -> tuple[ImageSet, ImageSet]:
    """Calibration and gate sets from real photos: different random crops for each.

    `labels` maps a photo's file name to its class index. The gate also holds every photo
    whole, labelled ones with their label (for the "no labelled photo lost" rule); crops
    stay unlabelled (a crop may miss the object). Calibration is crops and their mirror
    images from another seed; no calibration image is also a gate image (checked).
    """
    calibration, calibration_names = random_crops(
        photos, calibration_per_photo, image_size, seed, include_whole=False, mirrored=True
    )
    gate_images, gate_names = random_crops(
        photos, gate_per_photo, image_size, seed + 1, include_whole=True
    )
    shared = {image.tobytes() for image in calibration} & {image.tobytes() for image in gate_images}
    if shared:
        raise ValueError(f"{len(shared)} calibration image(s) are also gate images.")
    source = {"photos": len(photos), "labelled_photos": len(labels)}
    return (
        ImageSet(
            calibration,
            names=calibration_names,
            description={
                "source": f"{calibration_per_photo} random crops of each real photo + their "
                "mirror images",
                **source,
                "seed": seed,
                "disjoint_from_gate": True,
            },
        ),
        ImageSet(
            gate_images,
            labels=[labels.get(name) for name in gate_names],
            names=gate_names,
            description={
                "source": f"{gate_per_photo} other random crops of each photo (randomly "
                "mirrored) + each photo whole",
                **source,
                "seed": seed + 1,
            },
        ),
    )


MAX_CALIBRATION = 300  # NNCF's advice: ~300 samples


def split_sets(
    train: Sequence[Path],
    held_out: Sequence[tuple[Path, int]],
    image_size: int,
    *,
    seed: int = CALIBRATION_SEED,
) -> tuple[ImageSet, ImageSet]:
    """Calibration and gate sets for a model trained here: up to 300 training images (a
    seeded choice) to calibrate, its validation + test images (labelled) as the gate."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(train), size=min(MAX_CALIBRATION, len(train)), replace=False))
    calibration_paths = [Path(train[i]) for i in chosen]
    overlap = {path.resolve() for path in calibration_paths} & {
        Path(path).resolve() for path, _ in held_out
    }
    if overlap:
        raise ValueError(
            f"{len(overlap)} training image(s) are also held out, e.g. {min(overlap)}."
        )

    def load(path: Path) -> np.ndarray:
        return to_model_input(decode_image(path.read_bytes(), name=str(path)), image_size)

    return (
        ImageSet(
            np.stack([load(path) for path in calibration_paths]),
            names=[path.name for path in calibration_paths],
            description={
                "source": "the training split",
                "seed": seed,
                "of": len(train),
                "disjoint_from_gate": True,
            },
        ),
        ImageSet(
            np.stack([load(Path(path)) for path, _ in held_out]),
            labels=[label for _, label in held_out],
            names=[Path(path).name for path, _ in held_out],
            description={"source": "the validation + test splits", "seed": None},
        ),
    )


def _predict_in_batches(predict: Any, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [predict(images[i : i + GATE_BATCH]) for i in range(0, len(images), GATE_BATCH)]
    )


def convert_to_ir(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Keras model -> OpenVINO model with a dynamic batch; returns it and how it was made."""
    import keras
    import openvino as ov
    import tensorflow as tf

    metadata = read_metadata(model_dir)
    size = metadata.image_size
    started = time.perf_counter()
    model = keras.models.load_model(model_dir / MODEL_FILENAME, compile=False)
    with tempfile.TemporaryDirectory(prefix="kitchenware-savedmodel-") as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        ov_model = ov.convert_model(saved)
    ov_model.reshape([-1, size, size, 3])
    return ov_model, {
        "steps": "model.keras -> keras export (SavedModel) -> openvino.convert_model",
        "input_shape": [-1, size, size, 3],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "openvino": ov.get_version().split("-")[0],
        "seconds": round(time.perf_counter() - started, 2),
    }


def quantize_int8(ov_model: Any, calibration: ImageSet) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training quantization (PERFORMANCE preset: symmetric int8 for VNNI)."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    started = time.perf_counter()
    images = calibration.images
    dataset = nncf.Dataset(list(range(len(images))), lambda i: images[i : i + 1])
    quantized = nncf.quantize(
        ov_model,
        dataset,
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(images),
        # 7-bit weights in every layer: CPUs without VNNI (AVX2 only) multiply u8 x s8 into
        # saturating int16 pairs. Measured on such a CPU: the default (first layer only)
        # agreed 83 % (colour model) / 94 % (Xception) with fp32, ENABLE 100 %.
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),
    )
    return quantized, {
        "steps": "nncf.quantize of the fp32 IR (post-training, preset PERFORMANCE, "
        "overflow_fix ENABLE)",
        "nncf": nncf.__version__,
        "calibration": calibration.summary(),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _save_ir(ov_model: Any, path: Path) -> None:
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    # compress_to_fp16 defaults to True: keep fp32 weights, the gate measures the real thing.
    ov.save_model(ov_model, str(path), compress_to_fp16=False)


def reference_probabilities(model_dir: Path, gate: ImageSet) -> np.ndarray:
    """The Keras fp32 model's output on the gate set: what every artifact is compared with."""
    from kitchenware.runtime.tensorflow_backend import Classifier

    classifier = Classifier.load(model_dir)
    return _predict_in_batches(classifier.predict_arrays, gate.images)


def build_runtime_artifacts(
    model_dir: Path | str,
    calibration: ImageSet,
    gate: ImageSet,
    *,
    backends: Sequence[str] = ALL_OPENVINO,
    rule: GateRule | None = None,
    log: Any = print,
) -> RuntimeManifest:
    """Write the OpenVINO IRs, the start-up check's reference slice and runtimes.json into
    `model_dir` (an exported model dir).

    Every backend is gated against the Keras fp32 model on `gate`; a failing one stays in
    the manifest with its numbers (and `auto` skips it). Replaces earlier artifacts.
    """
    import nncf
    import openvino as ov

    model_dir = Path(model_dir)
    rule = rule or GateRule()
    shutil.rmtree(model_dir / OPENVINO_DIR, ignore_errors=True)
    reference = reference_probabilities(model_dir, gate)
    fp32_model, conversion = convert_to_ir(model_dir)
    _save_ir(fp32_model, ir_path(model_dir, OPENVINO_FP32))
    log(f"converted {model_dir / MODEL_FILENAME} to OpenVINO IR in {conversion['seconds']} s")

    made_by: dict[str, dict[str, Any]] = {}
    if OPENVINO_FP32 in backends or OPENVINO_BF16 in backends:
        made_by[OPENVINO_FP32] = made_by[OPENVINO_BF16] = conversion
    if OPENVINO_INT8 in backends:
        int8_model, quantization = quantize_int8(fp32_model, calibration)
        _save_ir(int8_model, ir_path(model_dir, OPENVINO_INT8))
        made_by[OPENVINO_INT8] = {"from": conversion, **quantization}
        log(f"quantized to int8 on {len(calibration.images)} images in {quantization['seconds']} s")

    decisive = decisive_mask(reference, rule.decisive_margin)
    manifest = RuntimeManifest(
        reference=f"Keras fp32 ({MODEL_FILENAME}) through TensorFlow",
        gate_set={
            **gate.summary(),
            "decisive_margin": rule.decisive_margin,
            "decisive_images": int(decisive.sum()),
            "undecided_images": int((~decisive).sum()),
        },
        calibration_set=calibration.summary(),
        versions={"openvino": ov.get_version().split("-")[0], "nncf": nncf.__version__},
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        cpu=cpu_description(),
    )
    agreeing = np.ones(len(reference), dtype=bool)
    for backend in backends:
        result, candidate = _gate_backend(model_dir, backend, reference, gate, rule)
        log(result.reason)
        if candidate is not None:
            agreeing &= candidate.argmax(axis=1) == reference.argmax(axis=1)
        manifest.artifacts[backend] = ArtifactRecord(
            backend=backend,
            ir_path=str(ir_path(model_dir, backend).relative_to(model_dir)),
            made_by={**made_by[backend], "precision_hint": PRECISION_OF_BACKEND[backend]},
            gate=result,
        )
    chosen = slice_indices(decisive, gate.labels, agreeing)
    if len(chosen):  # else no slice: the start-up check says it did not run
        manifest.reference_slice = write_reference_slice(
            model_dir,
            gate.images[chosen],
            reference[chosen],
            [gate.labels[i] for i in chosen],
            [gate.names[i] for i in chosen],
        )
    write_manifest(manifest, model_dir)
    return manifest


def _gate_backend(
    model_dir: Path,
    backend: str,
    reference: np.ndarray,
    gate: ImageSet,
    rule: GateRule,
) -> tuple[GateResult, np.ndarray | None]:
    if backend == OPENVINO_BF16 and not cpu_supports_bf16():
        skipped = GateResult(
            backend=backend,
            passed=False,
            reason=f"{backend} skipped: this CPU has no native bf16 (it would run as f32).",
            images=0,
            rule=rule,
        )
        return skipped, None
    compiled = compile_ir(ir_path(model_dir, backend), PRECISION_OF_BACKEND[backend])
    request = compiled.create_infer_request()

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: batch})[compiled.output(0)])

    candidate = _predict_in_batches(predict, gate.images)
    return gate_result(backend, reference, candidate, gate.labels, gate.names, rule), candidate


def photo_artifacts_hook(
    photos: Sequence[Path], labels: dict[str, str], log: Any = print
) -> Callable[[Path], dict[str, Any]]:
    """An `extra_artifacts` hook for a store entry: OpenVINO IR gated on real photos.

    `labels` maps a photo's file stem to its class name (the others are unlabelled). The
    hook runs inside the new entry (modelbuild/pretrained's `store_model_dir`), so the IR and
    runtimes.json ship with it; it returns the gate results for the entry's metadata.
    """

    def build(model_dir: Path) -> dict[str, Any]:
        metadata = read_metadata(model_dir)
        by_name = {
            Path(photo).name: metadata.class_names.index(labels[Path(photo).stem])
            for photo in photos
            if Path(photo).stem in labels
        }
        calibration, gate = photo_sets(photos, by_name, metadata.image_size)
        manifest = build_runtime_artifacts(model_dir, calibration, gate, log=log)
        return manifest_summary(model_dir) | {"versions": manifest.versions}

    return build
