"""The tf.data pipeline gives the service's arrays, labels in class order, seeded shuffling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kitchenware.runtime.preprocessing import preprocess_bytes
from kitchenware.training.data import DataError, Sample
from kitchenware.training.pipeline import make_dataset, make_image_dataset

ImageWriter = Callable[..., Path]
SIZE = 64


@pytest.fixture
def mixed_files(tmp_path: Path, write_image: ImageWriter) -> list[Sample]:
    """JPEG, PNG with alpha, grayscale PNG and JPEG, CMYK JPEG, a big JPEG; odd sizes."""
    return [
        Sample(write_image(tmp_path / "a.jpg", size=(97, 61), seed=1), "cup"),
        Sample(write_image(tmp_path / "b.png", mode="RGBA", fmt="PNG", size=(50, 80)), "fork"),
        Sample(write_image(tmp_path / "c.png", mode="L", fmt="PNG", size=(33, 70), seed=3), "cup"),
        Sample(write_image(tmp_path / "d.jpg", mode="L", size=(64, 64), seed=4), "plate"),
        Sample(write_image(tmp_path / "e.jpg", mode="CMYK", size=(120, 90), seed=5), "fork"),
        Sample(write_image(tmp_path / "f.jpg", size=(400, 300), seed=6), "plate"),
    ]


def test_pipeline_arrays_equal_the_serving_preprocessing(mixed_files: list[Sample]) -> None:
    classes = ["cup", "fork", "plate"]
    dataset = make_dataset(mixed_files, classes, SIZE, batch_size=4)
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset), strict=True)
    images_all, labels_all = np.concatenate(images), np.concatenate(labels)

    assert images_all.dtype == np.float32 and images_all.shape == (6, SIZE, SIZE, 3)
    assert labels_all.dtype == np.int32
    assert labels_all.tolist() == [classes.index(s.label) for s in mixed_files]
    for sample, image in zip(mixed_files, images_all, strict=True):
        served = preprocess_bytes(sample.path.read_bytes(), SIZE)
        assert float(np.abs(image - served).max()) <= 1e-5, sample.path.name
    assert images_all.min() >= 0.0 and images_all.max() <= 255.0


def test_second_epoch_from_cache_matches_first(mixed_files: list[Sample], tmp_path: Path) -> None:
    for cache in (True, tmp_path / "cache" / "decoded"):
        if not isinstance(cache, bool):
            cache.parent.mkdir()
        dataset = make_dataset(mixed_files, ["cup", "fork", "plate"], SIZE, cache=cache)
        first = np.concatenate([x.numpy() for x, _ in dataset])
        second = np.concatenate([x.numpy() for x, _ in dataset])
        np.testing.assert_array_equal(first, second)


def test_shuffle_is_seeded_complete_and_changes_each_epoch(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    samples = [
        Sample(write_image(tmp_path / f"{i}.png", fmt="PNG", size=(8, 8), seed=i), f"c{i}")
        for i in range(24)
    ]
    classes = [f"c{i}" for i in range(24)]

    def epochs(seed: int) -> list[list[int]]:
        dataset = make_dataset(samples, classes, 32, batch_size=5, shuffle=True, seed=seed)
        return [np.concatenate([y.numpy() for _, y in dataset]).tolist() for _ in range(2)]

    first, again, other = epochs(1), epochs(1), epochs(2)
    assert first == again
    assert first[0] != first[1]
    assert first != other
    assert sorted(first[0]) == sorted(first[1]) == list(range(24))


def test_unknown_label_names_the_file(mixed_files: list[Sample]) -> None:
    with pytest.raises(DataError, match=r"a\.jpg has label 'cup'.* not one of"):
        make_dataset(mixed_files, ["fork", "plate"], SIZE)


def test_image_dataset_keeps_file_order(mixed_files: list[Sample]) -> None:
    paths = [s.path for s in reversed(mixed_files)]
    images = np.concatenate([x.numpy() for x in make_image_dataset(paths, SIZE, batch_size=4)])
    for path, image in zip(paths, images, strict=True):
        np.testing.assert_allclose(image, preprocess_bytes(path.read_bytes(), SIZE), atol=1e-5)
