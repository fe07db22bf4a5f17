"""ERFNet encoder (Romera et al., 2017): factorised residual convolutions, stride 8.

The default backbone: about 2M parameters at width 1.0, fast enough to train on
a CPU. ``width`` scales every channel count and ``depth`` the number of
residual blocks per stage (1.0 each: the published network), so quick runs and
tests can use a narrow, shallow one.
"""

import keras

from usss_tf.model.layers import PaddedConv2D, batch_norm, make_divisible, scale_depth

STAGE2_BLOCKS = 5
# The dilation of each stage-3 block; a shallower network keeps the first ones.
STAGE3_DILATIONS = (2, 4, 8, 16, 2, 4, 8, 16)


def _downsampler(x, channels, sync, name):
    in_channels = x.shape[-1]
    conv = keras.layers.Conv2D(
        channels - in_channels, 3, strides=2, padding="same", name=f"{name}_conv"
    )(x)
    pool = keras.layers.MaxPooling2D(2, padding="same", name=f"{name}_pool")(x)
    x = keras.layers.Concatenate(name=f"{name}_concat")([conv, pool])
    x = batch_norm(sync, f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _non_bottleneck_1d(x, dilation, dropout, sync, name):
    channels = x.shape[-1]
    shortcut = x
    for i, rate in enumerate((1, dilation)):
        # PaddedConv2D: at stride 1 the same result as padding="same", through
        # TensorFlow's native dilated convolution (Keras' goes via SpaceToBatch).
        x = PaddedConv2D(channels, (3, 1), dilation_rate=(rate, 1), name=f"{name}_conv{i}a")(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}a")(x)
        x = PaddedConv2D(channels, (1, 3), dilation_rate=(1, rate), name=f"{name}_conv{i}b")(x)
        x = batch_norm(sync, f"{name}_bn{i}")(x)
        if i == 0:
            x = keras.layers.ReLU(name=f"{name}_relu{i}b")(x)
    if dropout:
        x = keras.layers.SpatialDropout2D(dropout, name=f"{name}_dropout")(x)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def build_erfnet(width=1.0, depth=1.0, dropout=0.0, sync_batchnorm=False, name="erfnet"):
    """Returns a functional ``keras.Model``: float image [B, H, W, 3] -> features at stride 8.

    ``depth`` keeps ``ceil(depth x 5)`` stage-2 and ``ceil(depth x 8)`` stage-3 blocks.
    """
    c16, c64, c128 = (make_divisible(c, width) for c in (16, 64, 128))
    # A downsampler concatenates conv and pooled channels: each stage must grow.
    c64 = max(c64, 2 * c16)
    c128 = max(c128, 2 * c64)
    inputs = keras.Input((None, None, 3), name="images")
    x = _downsampler(inputs, c16, sync_batchnorm, "down1")
    x = _downsampler(x, c64, sync_batchnorm, "down2")
    for i in range(scale_depth(STAGE2_BLOCKS, depth)):
        x = _non_bottleneck_1d(x, 1, dropout / 10.0, sync_batchnorm, f"stage2_block{i}")
    x = _downsampler(x, c128, sync_batchnorm, "down3")
    for i, rate in enumerate(STAGE3_DILATIONS[:scale_depth(len(STAGE3_DILATIONS), depth)]):
        x = _non_bottleneck_1d(x, rate, dropout, sync_batchnorm, f"stage3_block{i}")
    return keras.Model(inputs, x, name=name)
