"""Grad-CAM over the Keras model of the TensorFlow backend: the one heatmap needing gradients.

With runtime/tensorflow_backend, the only runtime module importing TensorFlow or Keras
(an import-linter contract in pyproject.toml); serving/explain calls it and scales its map.

Grad-CAM needs gradients, so the Keras model. Its backbone is a nested model inside the
outer one, and `keras.Model(outer.input, inner_layer.output)` fails on that ("graph
disconnected"). So the outer model is flattened into a chain of layers and run as two
steps under one GradientTape: up to the last 4-D feature map (the backbone's output),
then the head, ending at the class logit (the softmax is left out, so a confident class
still has a gradient).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class GradCamUnavailable(ValueError):
    """This model cannot be explained with Grad-CAM (serving answers a 400: use occlusion)."""


def _single(x: Any) -> Any:
    """A nested model saved with `outputs=[...]` gives a one-element list."""
    return x[0] if isinstance(x, list | tuple) and len(x) == 1 else x


def _is_feature_map(layer: Any) -> bool:
    try:
        return len(_single(layer.output).shape) == 4
    except (AttributeError, ValueError, TypeError):
        return False


def flatten_layers(model: Any) -> list[Any]:
    """The model as a chain of layers; nested models that end in a feature map stay whole
    (the backbone), the others (a wrapper, a head) are opened up."""
    import keras

    chain: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model) and not _is_feature_map(layer):
            chain.extend(flatten_layers(layer))
        else:
            chain.append(layer)
    return chain


class GradCam:
    """Grad-CAM over a Keras classifier whose layers form a chain (checked on first use)."""

    def __init__(self, model: Any) -> None:
        import keras

        self.model = model
        chain = flatten_layers(model)
        maps = [i for i, layer in enumerate(chain) if _is_feature_map(layer)]
        if not maps:
            raise GradCamUnavailable("The model has no 4-D feature map.")
        split = maps[-1] + 1
        self.base, self.head = chain[:split], chain[split:]
        self.softmax_dense = None
        self.score_is_logit = True
        last = self.head[-1] if self.head else None
        activation = getattr(getattr(last, "activation", None), "__name__", "")
        if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and activation == "softmax"
        ):
            self.head = self.head[:-1]  # score the logits
        elif isinstance(last, keras.layers.Dense) and activation == "softmax":
            self.head, self.softmax_dense = self.head[:-1], last
        else:
            self.score_is_logit = False  # no softmax to strip: score log-probabilities
        self._checked = False
        self._traced: Any = None

    def _run(self, layers: list[Any], x: Any) -> Any:
        for layer in layers:
            x = _single(layer(x, training=False))
        return x

    def _scores(self, features: Any) -> Any:
        import tensorflow as tf

        x = self._run(self.head, features)
        if self.softmax_dense is not None:
            kernel, bias = self.softmax_dense.kernel, self.softmax_dense.bias
            x = tf.matmul(x, kernel) + (bias if bias is not None else 0.0)
        elif not self.score_is_logit:
            x = tf.math.log(x + 1e-9)
        return x

    def _cam(self, batch: Any, index: Any) -> Any:
        """Base and head as two steps under one tape; the map for class `index`."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            features = self._run(self.base, batch)
            tape.watch(features)
            score = tf.gather(self._scores(features), index, axis=1)
        grads = tape.gradient(score, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[0]

    def _check_chain(self, batch: Any) -> None:
        """The chain must compute what the model computes, else the map would be wrong."""
        import tensorflow as tf

        logits = self._scores(self._run(self.base, batch))
        probabilities = tf.nn.softmax(logits) if self.score_is_logit else tf.exp(logits)
        expected = self.model(batch, training=False)
        if not np.allclose(np.asarray(probabilities), np.asarray(expected), atol=1e-4):
            raise GradCamUnavailable(
                "gradcam: this model's graph is not a chain of layers; use method=occlusion."
            )
        self._checked = True

    def __call__(self, array: np.ndarray, index: int) -> np.ndarray:
        """The raw map for class `index` at the feature map's size (explain scales it)."""
        import tensorflow as tf

        batch = tf.convert_to_tensor(np.asarray(array, np.float32)[None])
        if not self._checked:
            self._check_chain(batch)
            self._traced = tf.function(self._cam, reduce_retracing=True)
        return np.asarray(self._traced(batch, tf.constant(index, tf.int32)))
