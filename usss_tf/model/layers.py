"""Small building blocks shared by the backbones."""

import concurrent.futures
import math

import keras
import tensorflow as tf


def make_divisible(channels, width, minimum=8):
    """Scales a channel count by ``width``, rounding to a multiple of 4 (>= ``minimum``)."""
    return max(minimum, int(round(channels * width / 4.0)) * 4)


def scale_depth(blocks, depth):
    """Scales a stage's number of blocks by ``depth`` (EfficientNet's depth coefficient):
    ``ceil(blocks * depth)``, at least one, so every stage and its stride stay.
    The epsilon keeps a float product like 0.3 * 10 = 3.0000000000000004 at 3."""
    return max(1, math.ceil(blocks * depth - 1e-9))


def batch_norm(sync, name):
    """BatchNorm with PyTorch's momentum and epsilon; ``sync`` normalises over all replicas.

    Plain BatchNorm under ``MirroredStrategy`` normalises each replica's slice
    of the batch; the synchronized form makes a multi-replica step equal a
    single-device step on the same global batch.
    """
    return FusedBatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync, name=name)


@keras.saving.register_keras_serializable("usss_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel.

    Keras 3 normalises with a dozen element-wise ops (moments, then scale and
    shift), each a pass over the activation, and as many again for the
    gradient; ``FusedBatchNormV3`` (oneDNN on CPU, cuDNN on GPU) does each
    direction in one op. Same variables, statistics and moving-average rule
    as the Keras layer (its biased batch variance), so checkpoints and
    configs are interchangeable. Synchronised BatchNorm, masks and
    non-channels-last axes take the Keras path: the fused op cannot reduce
    over replicas.
    """

    def _can_fuse(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and not self.synchronized
            and not self.renorm
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (3, -1)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        # Statistics in float32 as Keras keeps them (inputs may be bfloat16/float16).
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        if training and self.trainable:
            outputs, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
                epsilon=self.epsilon, data_format="NHWC", is_training=True,
            )
            # The kernel reports the variance with Bessel's correction; Keras
            # (and the normalisation itself) use the biased one.
            count = tf.cast(tf.size(x) // channels, tf.float32)
            variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, data_format="NHWC", is_training=False,
            )
        return tf.cast(outputs, self.compute_dtype)


def _pair(value):
    return (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)


_NATIVE_DILATED_GRADIENT = {}


def _probe_dilated_gradient(dtype):
    def probe(x, kernel):  # Arguments, not constants: nothing is folded away.
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID", dilations=2)
        return tape.gradient(y, [x, kernel])

    try:
        tf.function(probe, autograph=False)(tf.ones([1, 5, 5, 1], dtype), tf.ones([3, 3, 1, 1], dtype))
        return True
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError):
        return False


def has_native_dilated_gradient(dtype):
    """Whether this machine runs the gradient of a dilated ``tf.nn.conv2d`` in ``dtype``.

    On CPU only oneDNN has those kernels, and only for the types the CPU
    supports (float16 needs AVX512-FP16); with oneDNN off
    (``TF_ENABLE_ONEDNN_OPTS=0``) or on such a CPU, TensorFlow's fallback
    refuses dilations > 1 at run time. So it is probed once per dtype with a
    tiny traced step, in a thread of its own: eager, with no graph being
    built and no gradient tape of the caller's (``tf.init_scope`` would
    pause the probe's own tape).
    """
    name = tf.as_dtype(dtype).name
    if name not in _NATIVE_DILATED_GRADIENT:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            _NATIVE_DILATED_GRADIENT[name] = pool.submit(_probe_dilated_gradient, name).result()
    return _NATIVE_DILATED_GRADIENT[name]


@keras.saving.register_keras_serializable("usss_tf")
class PaddedConv2D(keras.layers.Conv2D):
    """A 2-D convolution padded as PyTorch pads, run by TensorFlow's native dilated op.

    ``torch_padding`` pixels of zeros go on every side (top = bottom, left =
    right), like ``torch.nn.Conv2d(padding=p)``; the default,
    ``dilation * (kernel - 1) // 2``, keeps the size at stride 1. Keras'
    ``padding="same"`` pads the bottom/right more than the top/left at stride
    2 on even sizes, which shifts every sampling position by one pixel: weights
    trained in PyTorch (e.g. the DRN ImageNet checkpoints) then compute
    something else. Dilations go to ``tf.nn.conv2d(dilations=...)`` instead of
    Keras' SpaceToBatch -> conv -> BatchToSpace path, which is slower on CPU,
    except where the native op has no gradient kernel for the dtype
    (``has_native_dilated_gradient``): then through that path, the same values.
    """

    def __init__(self, filters, kernel_size, torch_padding=None, **kwargs):
        kwargs.pop("padding", None)
        super().__init__(filters, kernel_size, padding="valid", **kwargs)
        if torch_padding is None:
            torch_padding = tuple(
                d * (k - 1) // 2 for d, k in zip(self.dilation_rate, self.kernel_size)
            )
        self.torch_padding = _pair(torch_padding)

    def call(self, inputs):
        native = (all(d == 1 for d in self.dilation_rate)
                  or has_native_dilated_gradient(inputs.dtype))
        if native and tuple(self.strides) == (1, 1) and self.torch_padding == self._same_size_padding():
            # At stride 1 with odd kernels "SAME" pads symmetrically: PyTorch's
            # padding, and the fastest oneDNN path (no separate pad op).
            outputs = tf.nn.conv2d(inputs, self.kernel, strides=1, padding="SAME",
                                   dilations=self.dilation_rate)
            return self._finish(outputs)
        pad_h, pad_w = self.torch_padding
        if pad_h or pad_w:
            # A separate pad: TensorFlow's CPU gradient kernels for dilated
            # convolutions (oneDNN) take VALID padding, not explicit padding.
            inputs = tf.pad(inputs, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
        # Without a native dilated gradient, tf.nn.convolution runs a dilation
        # as SpaceToBatch -> conv -> BatchToSpace (Keras' path): the same values.
        conv = tf.nn.conv2d if native else tf.nn.convolution
        outputs = conv(inputs, self.kernel, strides=self.strides, padding="VALID",
                       dilations=self.dilation_rate)
        return self._finish(outputs)

    def _same_size_padding(self):
        if any(k % 2 == 0 for k in self.kernel_size):
            return None
        return tuple(d * (k - 1) // 2 for d, k in zip(self.dilation_rate, self.kernel_size))

    def _finish(self, outputs):
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        spatial = []
        for size, k, s, d, p in zip(
            input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate, self.torch_padding
        ):
            spatial.append(None if size is None else (size + 2 * p - d * (k - 1) - 1) // s + 1)
        return (input_shape[0], *spatial, self.filters)

    def get_config(self):
        config = super().get_config()
        config.pop("padding", None)
        return {**config, "torch_padding": self.torch_padding}
