"""keras-hub image backbones as the shared encoder, loaded from a local preset folder.

A preset folder is what ``backbone.save_to_preset(folder)`` (or keras-hub's
own download tools, on a machine with network) writes: ``config.json``,
``model.weights.h5`` and optionally ``image_converter.json``. Nothing is
downloaded here.

The encoder fuses the backbone's pyramid levels of stride 8 and coarser
(upsampled to stride 8, concatenated, 1x1 conv + BN + ReLU), so it fits the
decoders like DRN or ERFNet. Inputs arrive ImageNet-normalised (the model's
``DomainPreprocessor``); a fixed affine layer turns them into the
normalisation the preset's image converter declares (ImageNet when the
preset has none).
"""

import pathlib

import keras
import numpy as np
import tensorflow as tf

from usss_tf.errors import ConfigError
from usss_tf.model.backbones import OUTPUT_STRIDE
from usss_tf.model.layers import batch_norm
from usss_tf.model.preprocessing import IMAGENET_MEAN, IMAGENET_STD

FUSION_CHANNELS = 256
_PROBE_SIZE = 64


def _keras_hub():
    try:
        import keras_hub
    except ImportError:
        raise ConfigError(
            "key 'model.backbone': 'hub' needs keras-hub; install it with pip install 'usss-tf[hub]'"
        ) from None
    return keras_hub


@keras.saving.register_keras_serializable("usss_tf")
class ChannelAffine(keras.layers.Layer):
    """``x * multiplier + bias`` per channel, with constants (no weights)."""

    def __init__(self, multiplier, bias, **kwargs):
        super().__init__(**kwargs)
        self.multiplier = [float(v) for v in np.broadcast_to(multiplier, (3,))]
        self.bias = [float(v) for v in np.broadcast_to(bias, (3,))]

    def call(self, inputs):
        return inputs * tf.constant(self.multiplier, inputs.dtype) + tf.constant(self.bias, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "multiplier": self.multiplier, "bias": self.bias}


@keras.saving.register_keras_serializable("usss_tf")
class ResizeLike(keras.layers.Layer):
    """Bilinearly resizes ``inputs[0]`` to the spatial size of ``inputs[1]``."""

    def call(self, inputs):
        features, reference = inputs
        resized = tf.image.resize(features, tf.shape(reference)[1:3], method="bilinear")
        return tf.cast(resized, features.dtype)

    def compute_output_shape(self, input_shapes):
        features, reference = input_shapes
        return (features[0], reference[1], reference[2], features[3])


def preset_normalization(preset):
    """``(scale, offset)`` of the preset's image converter (0..255 pixels -> backbone input).

    Presets without an image converter are taken to expect ImageNet
    normalisation, what ``DomainPreprocessor`` produces.
    """
    keras_hub = _keras_hub()
    if not (pathlib.Path(preset) / "image_converter.json").is_file():
        mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
        return 1.0 / std, -mean / std
    converter = keras_hub.layers.ImageConverter.from_preset(str(preset))
    scale = 1.0 if converter.scale is None else np.asarray(converter.scale, np.float64)
    offset = 0.0 if converter.offset is None else np.asarray(converter.offset, np.float64)
    return scale, offset


def _check_preset(preset):
    path = pathlib.Path(preset) if preset else None
    if path is None:
        raise ConfigError(
            "key 'model.backbone_weights': backbone 'hub' needs a keras-hub preset folder here"
        )
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ConfigError(
            f"key 'model.backbone_weights': {path} is not a keras-hub preset folder "
            "(expected a folder with config.json and model.weights.h5, as save_to_preset writes)"
        )
    return path


def build_hub_backbone(preset, sync_batchnorm=False, fusion_channels=FUSION_CHANNELS, name="hub"):
    """Returns a functional encoder: ImageNet-normalised [B, H, W, 3] -> features at stride 8."""
    keras_hub = _keras_hub()
    path = _check_preset(preset)
    try:
        backbone = keras_hub.models.Backbone.from_preset(str(path))
    except Exception as error:  # keras-hub raises several types for a broken preset.
        raise ConfigError(f"key 'model.backbone_weights': cannot load preset {path}: {error}") from None
    kind = type(backbone).__name__
    levels = getattr(backbone, "pyramid_outputs", None)
    if not levels:
        raise ConfigError(
            f"key 'model.backbone_weights': {path} holds a {kind}, which has no pyramid "
            "outputs; use a keras-hub FeaturePyramidBackbone (e.g. ResNetBackbone)"
        )
    if any(size is not None for size in backbone.input.shape[1:3]):
        raise ConfigError(
            f"key 'model.backbone_weights': {path} holds a {kind} built for a fixed input size "
            f"{tuple(backbone.input.shape[1:3])}; segmentation needs any size: rebuild it with "
            "image_shape=(None, None, 3) (keras-hub's MiTBackbone cannot: its layers assume "
            "square inputs of a fixed size)"
        )
    pyramid = keras.Model(backbone.input, levels)
    probe = pyramid(np.zeros((1, _PROBE_SIZE, _PROBE_SIZE, 3), np.float32))
    strides = {key: _PROBE_SIZE // int(value.shape[1]) for key, value in probe.items()}
    used = sorted((k for k, s in strides.items() if s >= OUTPUT_STRIDE), key=strides.get)
    if not used or strides[used[0]] != OUTPUT_STRIDE:
        raise ConfigError(
            f"key 'model.backbone_weights': {kind} in {path} has no stride-8 pyramid level "
            f"(levels and strides: {strides})"
        )

    scale, offset = preset_normalization(path)
    inputs = keras.Input((None, None, 3), name="images")
    # ImageNet-normalised -> 0..255 -> the preset's normalisation, in one affine step.
    mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    x = ChannelAffine(std * scale, mean * scale + offset, name="input_normalization")(inputs)
    outputs = pyramid(x)
    reference = outputs[used[0]]
    fused = [reference] + [
        ResizeLike(name=f"resize_{key}")([outputs[key], reference]) for key in used[1:]
    ]
    x = keras.layers.Concatenate(name="fuse")(fused) if len(fused) > 1 else fused[0]
    x = keras.layers.Conv2D(fusion_channels, 1, use_bias=False, name="fuse_conv")(x)
    x = batch_norm(sync_batchnorm, "fuse_bn")(x)
    x = keras.layers.ReLU(name="fuse_relu")(x)
    return keras.Model(inputs, x, name=name)
