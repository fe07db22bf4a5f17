"""The input step every image of a domain goes through: the domain's scale, then normalisation.

Training, validation, ``usss-tf evaluate``, the TensorBoard panels, the
centroid stage and every exported signature run this one step, so the served
model sees an image exactly as evaluation saw it. Training applies the two
halves separately: its augmentation resizes image and mask together (random
scale times the domain's scale, through the same ``scaled_size``) and the
model then only normalises.
"""

import keras
import tensorflow as tf

# ImageNet statistics in 0..255 RGB: what the encoders' pretrained weights expect.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def scaled_size(shape, scale):
    """(H, W) scaled by ``scale`` and rounded (at least 1): the size an image is seen at."""
    size = tf.cast(tf.round(tf.cast(shape, tf.float32) * scale), tf.int32)
    return tf.maximum(size, 1)


@keras.saving.register_keras_serializable("usss_tf")
class DomainPreprocessor(keras.layers.Layer):
    """0..255 RGB [B, H, W, 3] of one domain -> the encoder's input.

    ``call`` resizes by ``scale`` (bilinear, as training's augmentation does)
    and normalises with ``mean`` / ``std``; both halves are public so training
    can run only ``normalize`` on crops its augmentation already scaled.

    Args:
      scale: the domain's resize factor (config ``domains[i].scale``).
      mean, std: per-channel statistics of the encoder's input, 0..255 RGB.
    """

    def __init__(self, scale=1.0, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.built = True

    def resize(self, images):
        """float32 images at the domain's scale, still 0..255."""
        images = tf.cast(images, tf.float32)
        if self.scale == 1.0:
            return images
        size = scaled_size(tf.shape(images)[1:3], self.scale)
        return tf.image.resize(images, size, method="bilinear")

    def normalize(self, images):
        return (tf.cast(images, tf.float32) - self.mean) / self.std

    def call(self, images):
        return self.normalize(self.resize(images))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "mean": list(self.mean),
                "std": list(self.std)}
