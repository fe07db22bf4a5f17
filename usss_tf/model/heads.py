"""Heads on top of the shared encoder: per-domain decoders, the entropy module and the
reconstruction head of masked image modelling.

Under a mixed-precision policy (``usss_tf.precision``) the 1x1 convolutions
compute in float16/bfloat16, but what leaves a head is float32: the class
logits, the unit embeddings (normalised in float32) and the centroid
similarities (``LabelCentroids`` always runs in float32), so softmax, losses
and entropies never see a half-precision value.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from usss_tf.losses import centroid_similarity


@keras.saving.register_keras_serializable("usss_tf")
class DomainDecoder(keras.layers.Layer):
    """1x1 convolution to one domain's class logits at stride 8.

    Upsampling to the input size is done by the caller, which knows the size.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.classifier = keras.layers.Conv2D(num_classes, 1, name="classifier")

    def build(self, input_shape):
        self.classifier.build(input_shape)

    def call(self, features):
        return ops.cast(self.classifier(features), "float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable("usss_tf")
class EmbeddingHead(keras.layers.Layer):
    """1x1 convolution to a ``dim``-dimensional embedding, L2-normalised per pixel.

    Stage 2 initialises the kernel from the PCA of the encoder features, so
    the embedding starts in the space the label centroids were fitted in.
    """

    def __init__(self, dim=64, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.projection = keras.layers.Conv2D(dim, 1, name="projection")

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, features):
        projected = ops.cast(self.projection(features), "float32")
        return ops.normalize(projected, axis=-1, order=2, epsilon=1e-6)

    def set_projection(self, kernel, bias):
        """Sets the projection to ``x @ kernel + bias`` (kernel [F, dim], bias [dim])."""
        conv = self.projection
        conv.kernel.assign(np.asarray(kernel, np.float32).reshape(conv.kernel.shape))
        conv.bias.assign(np.asarray(bias, np.float32))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


@keras.saving.register_keras_serializable("usss_tf")
class LabelCentroids(keras.layers.Layer):
    """K unit-vector centroids per class of one domain, a non-trainable weight.

    Kept as a weight so centroids travel in checkpoints and exports. ``call``
    returns the class logits ``max_k <e, M[c, k]> / temperature``, always in
    float32 (the layer's dtype policy is float32 unless told otherwise), so a
    mixed-precision model compares embeddings and centroids at full precision.
    """

    def __init__(self, num_classes, centroids_per_class=3, dim=64, temperature=0.1, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.centroids_per_class = centroids_per_class
        self.dim = dim
        self.temperature = temperature
        self.centroids = self.add_weight(
            shape=(num_classes, centroids_per_class, dim),
            initializer=keras.initializers.RandomNormal(seed=num_classes),
            trainable=False,
            name="centroids",
        )
        self.built = True

    def call(self, embeddings):
        centroids = ops.normalize(self.centroids, axis=-1, order=2, epsilon=1e-6)
        return centroid_similarity(embeddings, centroids, self.temperature)

    def set_centroids(self, centroids):
        centroids = np.asarray(centroids, np.float32)
        norms = np.linalg.norm(centroids, axis=-1, keepdims=True)
        self.centroids.assign(centroids / np.maximum(norms, 1e-12))

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "centroids_per_class": self.centroids_per_class,
            "dim": self.dim,
            "temperature": self.temperature,
        }


@keras.saving.register_keras_serializable("usss_tf")
class ReconstructionHead(keras.layers.Layer):
    """Stride-8 encoder features -> the input's pixels, for masked image modelling.

    A 3x3 convolution (``hidden`` channels, ReLU) and a 1x1 convolution to
    ``3 * stride**2`` channels rearranged to a ``stride``-times larger image
    (depth to space). Deliberately light, as the decoders are, so the encoder
    must carry what a masked cell looked like (SimMIM: a linear head suffices).
    Only the ``masked`` stage and the ``masked_auxiliary`` term train or call
    it; inference never does (exports leave it out).
    """

    def __init__(self, stride=8, hidden=64, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride
        self.hidden = hidden
        self.context = keras.layers.Conv2D(hidden, 3, padding="same", activation="relu", name="context")
        self.pixels = keras.layers.Conv2D(3 * stride * stride, 1, name="pixels")

    def build(self, input_shape):
        self.context.build(input_shape)
        self.pixels.build(tuple(input_shape[:-1]) + (self.hidden,))

    def call(self, features, size):
        """float32 [B, H, W, 3] for features [B, h, w, C] of images of ``size`` (H, W) <= 8 (h, w)."""
        pixels = ops.cast(self.pixels(self.context(features)), "float32")
        image = tf.nn.depth_to_space(pixels, self.stride)
        return image[:, : size[0], : size[1], :]

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "hidden": self.hidden}
