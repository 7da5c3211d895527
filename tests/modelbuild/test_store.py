"""Model store: exported model directories import once, with their metadata and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kitchenware.runtime.metadata import METADATA_FILENAME, ModelMetadata, read_metadata
from kitchenware.runtime.preprocessing import PREPROCESSING_NAME


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    from kitchenware.modelbuild.store import export_model

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")]
    )
    metadata = ModelMetadata(
        class_names=["cup", "fork", "plate"],
        image_size=16,
        preprocessing=PREPROCESSING_NAME,
        backbone="tiny-test",
        dataset_fingerprint="sha256:test",
    )
    return export_model(model, metadata, tmp_path_factory.mktemp("exported"))


def test_import_is_idempotent_and_keeps_metadata(exported: Path) -> None:
    import bentoml

    from kitchenware.modelbuild.store import import_model_dir, model_dir

    tag, created = import_model_dir(exported)
    count = len(bentoml.models.list("kitchenware"))  # other tests may have stored models too
    again, created_again = import_model_dir(exported)
    assert created and not created_again
    assert again == tag
    assert len(bentoml.models.list("kitchenware")) == count
    stored = bentoml.models.get(tag)
    assert stored.info.labels["backbone"] == "tiny-test"
    assert stored.info.metadata["class_names"] == ["cup", "fork", "plate"]
    assert read_metadata(model_dir(tag)) == read_metadata(exported)


def test_stored_model_predicts_like_the_exported_file(exported: Path) -> None:
    from kitchenware.modelbuild.store import import_model_dir, model_dir
    from kitchenware.runtime.tensorflow_backend import Classifier

    tag, _ = import_model_dir(exported)
    batch = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    stored = Classifier.load(model_dir(tag)).predict_arrays(batch)
    original = Classifier.load(exported).predict_arrays(batch)
    np.testing.assert_allclose(stored, original, atol=1e-6)
    assert stored.shape == (4, 3)


def test_import_without_metadata_names_the_missing_file(tmp_path: Path, exported: Path) -> None:
    from kitchenware.modelbuild.store import import_model_dir

    (tmp_path / "model.keras").write_bytes((exported / "model.keras").read_bytes())
    with pytest.raises(ValueError, match=METADATA_FILENAME):
        import_model_dir(tmp_path)
