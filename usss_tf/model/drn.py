"""DRN-D (Yu et al., "Dilated Residual Networks", CVPR 2017): the paper's encoder family.

Channels 16-32-64-128-256-512-512-512 (the bottleneck variants expand stages
3-6 four times); stages 5 and 6 keep stride 8 and use dilations 2 and 4;
stages 7 and 8 are plain dilated convolutions that remove the gridding
artefacts. No dropout. Output stride 8.

The network computes what the published PyTorch ``drn.py`` computes: every
convolution is padded symmetrically (``PaddedConv2D``), and every layer with
weights is named after its PyTorch module path with ``.`` written ``_``
(``layer3.0.downsample.0`` -> ``layer3_0_downsample_0``), so the official
ImageNet checkpoints load key by key (``usss_tf.model.drn_weights``).
"""

import keras

from usss_tf.model.layers import PaddedConv2D, batch_norm, make_divisible, scale_depth

# variant -> (block, layers per stage 1-8), as in drn.py's drn_d_* constructors.
DRN_D_VARIANTS = {
    "drn_d_22": ("basic", (1, 1, 2, 2, 2, 2, 1, 1)),
    "drn_d_38": ("basic", (1, 1, 3, 4, 6, 3, 1, 1)),
    "drn_d_54": ("bottleneck", (1, 1, 3, 4, 6, 3, 1, 1)),
    "drn_d_105": ("bottleneck", (1, 1, 3, 4, 23, 3, 1, 1)),
}
DRN_D_LAYERS = {name: layers for name, (_, layers) in DRN_D_VARIANTS.items()}
DRN_D_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
EXPANSION = {"basic": 1, "bottleneck": 4}


def _conv(channels, kernel, name, stride=1, dilation=1):
    return PaddedConv2D(
        channels, kernel, strides=stride, dilation_rate=dilation, use_bias=False, name=name
    )


def _conv_layers(x, channels, convs, stride, dilation, sync, stage):
    """drn.py ``_make_conv_layers``: (conv 3x3, BN, ReLU) x convs, as ``layer<s>.<3i>/<3i+1>``."""
    for i in range(convs):
        x = _conv(channels, 3, f"{stage}_{3 * i}", stride if i == 0 else 1, dilation)(x)
        x = batch_norm(sync, f"{stage}_{3 * i + 1}")(x)
        x = keras.layers.ReLU(name=f"{stage}_{3 * i + 2}")(x)
    return x


def _residual_block(x, block, planes, stride, dilation, sync, name):
    """drn.py ``BasicBlock`` / ``Bottleneck`` with ``residual=True``."""
    out_channels = planes * EXPANSION[block]
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = _conv(out_channels, 1, f"{name}_downsample_0", stride)(x)
        shortcut = batch_norm(sync, f"{name}_downsample_1")(shortcut)
    if block == "basic":
        y = _conv(planes, 3, f"{name}_conv1", stride, dilation[0])(x)
        y = batch_norm(sync, f"{name}_bn1")(y)
        y = keras.layers.ReLU(name=f"{name}_relu1")(y)
        y = _conv(planes, 3, f"{name}_conv2", 1, dilation[1])(y)
        y = batch_norm(sync, f"{name}_bn2")(y)
    else:
        y = _conv(planes, 1, f"{name}_conv1")(x)
        y = batch_norm(sync, f"{name}_bn1")(y)
        y = keras.layers.ReLU(name=f"{name}_relu1")(y)
        # drn.py's Bottleneck dilates (and strides) its 3x3 conv by dilation[1].
        y = _conv(planes, 3, f"{name}_conv2", stride, dilation[1])(y)
        y = batch_norm(sync, f"{name}_bn2")(y)
        y = keras.layers.ReLU(name=f"{name}_relu2")(y)
        y = _conv(out_channels, 1, f"{name}_conv3")(y)
        y = batch_norm(sync, f"{name}_bn3")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_drn_d(variant="drn_d_22", width=1.0, depth=1.0, sync_batchnorm=False, name=None):
    """Returns a functional DRN-D model: float image [B, H, W, 3] -> features at stride 8.

    ``width`` scales every channel count and ``depth`` the number of residual
    blocks of stages 3-6 (1.0 each = the published network, the only one the
    ImageNet checkpoints fit).
    """
    block, layers = DRN_D_VARIANTS[variant]
    channels = [make_divisible(c, width) for c in DRN_D_CHANNELS]
    sync = sync_batchnorm
    inputs = keras.Input((None, None, 3), name="images")
    x = _conv(channels[0], 7, "layer0_0")(inputs)
    x = batch_norm(sync, "layer0_1")(x)
    x = keras.layers.ReLU(name="layer0_2")(x)
    # Stages 1-2: plain convolutions (stride 1, then 2).
    x = _conv_layers(x, channels[0], layers[0], 1, 1, sync, "layer1")
    x = _conv_layers(x, channels[1], layers[1], 2, 1, sync, "layer2")
    # Stages 3-6: residual; 3 and 4 halve the resolution, 5 and 6 dilate instead
    # (drn.py's new_level=False: their first block dilates both convolutions fully).
    for stage, (stride, dilation) in enumerate(((2, 1), (2, 1), (1, 2), (1, 4)), start=3):
        for i in range(scale_depth(layers[stage - 1], depth)):
            x = _residual_block(
                x, block, channels[stage - 1], stride if i == 0 else 1, (dilation, dilation),
                sync, f"layer{stage}_{i}",
            )
    # Stages 7-8: degridding convolutions without residuals.
    x = _conv_layers(x, channels[6], layers[6], 1, 2, sync, "layer7")
    x = _conv_layers(x, channels[7], layers[7], 1, 1, sync, "layer8")
    return keras.Model(inputs, x, name=name or variant)
