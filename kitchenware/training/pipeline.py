"""tf.data input pipelines that decode through the shared preprocessing module.

Bytes are read with `tf.io.read_file` and turned into arrays by
`kitchenware.runtime.preprocessing.preprocess_bytes`, the exact function the service calls, so
training and serving see identical pixels. Augmentation is not done here: the model
applies it as Keras layers, only while training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from kitchenware.runtime.preprocessing import preprocess_bytes
from kitchenware.training.data import DataError, Sample


def _decode_fn(image_size: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """A tf.data map function: (file path) -> float32 (s, s, 3) image in [0, 255]."""

    def decode(data: bytes, path: bytes) -> np.ndarray:
        return preprocess_bytes(data, image_size, name=path.decode(errors="replace"))

    def load(path: tf.Tensor) -> tf.Tensor:
        data = tf.io.read_file(path)
        # Pure function of its input: stateful=False lets tf.data run it in parallel freely.
        image = tf.numpy_function(decode, [data, path], tf.float32, stateful=False)
        image.set_shape((image_size, image_size, 3))
        return image

    return load


def _label_indices(samples: Sequence[Sample], class_names: Sequence[str]) -> list[int]:
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [s for s in samples if s.label not in index]
    if unknown:
        first = unknown[0]
        raise DataError(
            f"{first.path} has label {first.label!r} ({len(unknown)} sample(s) with unknown "
            f"labels), which is not one of the model's classes {', '.join(class_names)}."
        )
    return [index[s.label] for s in samples]


def make_dataset(
    samples: Sequence[Sample],
    class_names: Sequence[str],
    image_size: int,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool | str | Path = True,
) -> tf.data.Dataset:
    """(images float32 (b, s, s, 3) in [0, 255], labels int32 (b,)) batches.

    `cache=True` keeps decoded images in memory after the first epoch; a path caches them
    to that file instead (for sets larger than RAM); False decodes every epoch. With
    `shuffle`, the order is seeded and changes every epoch.
    """
    if not samples:
        raise DataError("Cannot build an input pipeline from an empty list of samples.")
    labels = _label_indices(samples, class_names)
    paths = [str(s.path) for s in samples]
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(labels, tf.int32))
    )
    load = _decode_fn(image_size)
    dataset = dataset.map(
        lambda path, label: (load(path), label),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if cache is not False:
        dataset = dataset.cache("" if cache is True else str(cache))
    if shuffle:
        dataset = dataset.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_image_dataset(
    paths: Sequence[Path | str], image_size: int, *, batch_size: int = 32
) -> tf.data.Dataset:
    """Batches of images only, in the order of `paths` (for scoring files)."""
    if not paths:
        raise DataError("Cannot build an input pipeline from an empty list of image paths.")
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant([str(p) for p in paths], tf.string))
    dataset = dataset.map(
        _decode_fn(image_size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
