"""DRN-D (Yu et al., "Dilated Residual Networks", 2017): the paper's encoder family.

Channels 16-32-64-128-256-512-512-512; stages 5 and 6 keep stride 8 and use
dilations 2 and 4; stages 7 and 8 are plain dilated convolutions that remove
the gridding artefacts. No dropout. Output stride 8.
"""

import keras

from usss_tf.model.layers import batch_norm, make_divisible

DRN_D_LAYERS = {
    "drn_d_22": (1, 1, 2, 2, 2, 2, 1, 1),
    "drn_d_38": (1, 1, 3, 4, 6, 3, 1, 1),
}
DRN_D_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)


def _conv_bn_relu(x, channels, kernel, stride, dilation, sync, name):
    x = keras.layers.Conv2D(
        channels, kernel, strides=stride, padding="same", dilation_rate=dilation,
        use_bias=False, name=f"{name}_conv",
    )(x)
    x = batch_norm(sync, f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _basic_block(x, channels, stride, dilation, sync, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != channels:
        shortcut = keras.layers.Conv2D(
            channels, 1, strides=stride, use_bias=False, name=f"{name}_down_conv"
        )(x)
        shortcut = batch_norm(sync, f"{name}_down_bn")(shortcut)
    y = _conv_bn_relu(x, channels, 3, stride, dilation, sync, f"{name}_1")
    y = keras.layers.Conv2D(
        channels, 3, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_2_conv"
    )(y)
    y = batch_norm(sync, f"{name}_2_bn")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_drn_d(variant="drn_d_22", width=1.0, sync_batchnorm=False, name=None):
    """Returns a functional DRN-D model: float image [B, H, W, 3] -> features at stride 8."""
    layers = DRN_D_LAYERS[variant]
    channels = [make_divisible(c, width) for c in DRN_D_CHANNELS]
    inputs = keras.Input((None, None, 3), name="images")
    x = _conv_bn_relu(inputs, channels[0], 7, 1, 1, sync_batchnorm, "layer0")
    # Stages 1-2: plain convolutions (stride 1, then 2).
    for i in range(layers[0]):
        x = _conv_bn_relu(x, channels[0], 3, 1, 1, sync_batchnorm, f"layer1_{i}")
    for i in range(layers[1]):
        x = _conv_bn_relu(x, channels[1], 3, 2 if i == 0 else 1, 1, sync_batchnorm, f"layer2_{i}")
    # Stages 3-6: residual; 3 and 4 halve the resolution, 5 and 6 dilate instead.
    for stage, (stride, dilation) in enumerate(((2, 1), (2, 1), (1, 2), (1, 4)), start=3):
        for i in range(layers[stage - 1]):
            x = _basic_block(
                x, channels[stage - 1], stride if i == 0 else 1, dilation, sync_batchnorm,
                f"layer{stage}_{i}",
            )
    # Stages 7-8: degridding convolutions without residuals.
    for stage, dilation in ((7, 2), (8, 1)):
        for i in range(layers[stage - 1]):
            x = _conv_bn_relu(
                x, channels[stage - 1], 3, 1, dilation, sync_batchnorm, f"layer{stage}_{i}"
            )
    return keras.Model(inputs, x, name=name or variant)
