"""The default model, served for real, on real Kaggle photos: labels, encodings, EXIF.

One `bentoml serve service:Kitchenware` with no model setting (the service's default, the
published Xception imported from the pinned wheel), real HTTP on loopback.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps
from support.real_model import shared_real_server
from support.service import ServedService, serve, store_env

from kitchenware.modelbuild.pretrained import RealPhotos
from kitchenware.runtime.backends import load_backend
from kitchenware.runtime.preprocessing import decode_image, preprocess_bytes

pytestmark = pytest.mark.slow

# What a viewer does for each EXIF orientation is ImageOps.exif_transpose; storing the
# pixels with the inverse turn and setting the tag makes a photo that displays upright.
STORED_TURN = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
ORIENTATION_TAG = 0x0112


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ServedService:
    return shared_real_server(request, tmp_path_factory.getbasetemp())


def png_bytes(jpeg: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buffer, format="PNG")
    return buffer.getvalue()


def exif_oriented(jpeg: bytes, orientation: int) -> bytes:
    """The photo's pixels turned, with the EXIF tag that turns them back for display."""
    upright = Image.open(io.BytesIO(jpeg))
    stored = upright.transpose(STORED_TURN[orientation])
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def variants(photos: RealPhotos) -> list[tuple[str, str, bytes]]:
    """(filename, true label, bytes): every labelled photo as PNG and as EXIF 3, 6, 8."""
    out = []
    for photo_id, label in photos.labels.items():
        jpeg = photos.path(photo_id).read_bytes()
        out.append((f"{photo_id}.png", label, png_bytes(jpeg)))
        out += [(f"{photo_id}-exif{o}.jpg", label, exif_oriented(jpeg, o)) for o in STORED_TURN]
    return out


def classify(server: ServedService, name: str, data: bytes) -> dict:
    response = httpx.post(f"{server.url}/classify", files={"image": (name, data)}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def classify_batch(server: ServedService, files: list[tuple[str, bytes]]) -> list[dict]:
    response = httpx.post(
        f"{server.url}/classify_batch",
        files=[("images", (name, data)) for name, data in files],
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_every_labelled_photo_is_right_through_classify(
    server: ServedService, real_photos: RealPhotos
) -> None:
    answers = {
        photo_id: classify(server, f"{photo_id}.jpg", real_photos.path(photo_id).read_bytes())
        for photo_id in real_photos.labels
    }
    assert {i: a["label"] for i, a in answers.items()} == real_photos.labels
    assert all(a["model"] == server.extra["tag"] for a in answers.values())
    assert all(a["confidence"] > 0.5 for a in answers.values())


def test_all_18_photos_in_one_batch_keep_their_order_and_labels(
    server: ServedService, real_photos: RealPhotos
) -> None:
    files = [(f"{i}.jpg", real_photos.path(i).read_bytes()) for i in real_photos.ids]
    results = classify_batch(server, files)
    assert [r["filename"] for r in results] == [name for name, _ in files]
    predicted = {r["filename"][:-4]: r["label"] for r in results}
    assert {i: predicted[i] for i in real_photos.labels} == real_photos.labels


def test_exif_variants_are_built_right(real_photos: RealPhotos) -> None:
    """The fixtures themselves: stored turned, displayed (exif_transpose) upright."""
    photo_id = next(iter(real_photos.labels))
    jpeg = real_photos.path(photo_id).read_bytes()
    upright = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), np.float32)
    for orientation in STORED_TURN:
        data = exif_oriented(jpeg, orientation)
        raw = Image.open(io.BytesIO(data))
        assert raw.getexif()[ORIENTATION_TAG] == orientation
        shown = np.asarray(ImageOps.exif_transpose(raw).convert("L"), np.float32)
        assert shown.shape == upright.shape
        assert np.abs(shown - upright).mean() < 3  # only JPEG re-encoding noise
        if orientation in (6, 8):
            assert raw.size == (upright.shape[0], upright.shape[1])  # stored sideways
        assert decode_image(data).size == (upright.shape[1], upright.shape[0])


def test_png_and_exif_orientations_3_6_8_get_the_same_right_label(
    server: ServedService, real_photos: RealPhotos
) -> None:
    cases = variants(real_photos)
    results = classify_batch(server, [(name, data) for name, _, data in cases])
    wrong = [
        (name, label, r["label"])
        for (name, label, _), r in zip(cases, results, strict=True)
        if r["label"] != label
    ]
    assert wrong == []


@pytest.mark.parametrize("backend", ["auto", "tensorflow"])
def test_served_probabilities_equal_in_process_probabilities(
    backend: str,
    server: ServedService,
    real_photos: RealPhotos,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Same bytes, same model files: HTTP answers equal the in-process backend to 1e-5.

    `auto` is the default server against the in-process `load_backend` of the same choice;
    `tensorflow` a server with KITCHENWARE_BACKEND=tensorflow against the Keras model in
    `kitchenware.runtime.tensorflow_backend.Classifier`."""
    from kitchenware.runtime.tensorflow_backend import Classifier

    home = Path(str(server.extra["bentoml_home"]))
    name, version = str(server.extra["tag"]).split(":")
    entry = home / "models" / name / version
    if backend == "auto":
        compare_with(server, load_backend(entry), real_photos)
        return
    model = Classifier.load(entry)
    env = store_env(home, default_model=True, backend="tensorflow")
    with serve("service:Kitchenware", env, log_dir=tmp_path_factory.mktemp("tf")) as tf_server:
        answer = compare_with(tf_server, model, real_photos)
    assert answer.get("runtime") in (None, "tensorflow"), answer


def compare_with(server: ServedService, model: Any, real_photos: RealPhotos) -> dict:
    """Serve the photos (batch + single) and compare with `model` in this process."""
    cases = [(f"{i}.jpg", real_photos.path(i).read_bytes()) for i in real_photos.ids]
    cases += [(name, data) for name, _, data in variants(real_photos)[:8]]
    served = classify_batch(server, cases)
    single = classify(server, *cases[0])
    size = model.image_size
    local = model.predict_arrays(np.stack([preprocess_bytes(d, size) for _, d in cases]))
    classes = model.class_names
    remote = np.array([[r["probabilities"][c] for c in classes] for r in served])
    np.testing.assert_allclose(remote, local, atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        [single["probabilities"][c] for c in classes], local[0], atol=1e-5, rtol=0
    )
    return single
