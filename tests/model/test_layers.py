"""PaddedConv2D: PyTorch's symmetric padding, TensorFlow's native dilated convolution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from usss_tf.model.layers import PaddedConv2D


def _forward_and_gradients(layer, x):
    @tf.function
    def run():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return [y, *tape.gradient(loss, [x, layer.kernel, layer.bias])]

    return run()


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 2), (3, 4), ((3, 1), (2, 1)), ((1, 3), (1, 8))])
def test_at_stride_1_it_equals_keras_same_padding_values_and_gradients(kernel, dilation):
    x = tf.random.stateless_normal((2, 17, 24, 4), seed=(1, 2))
    reference = keras.layers.Conv2D(5, kernel, padding="same", dilation_rate=dilation)
    padded = PaddedConv2D(5, kernel, dilation_rate=dilation)
    reference.build(x.shape)
    padded.build(x.shape)
    padded.set_weights(reference.get_weights())
    for want, got in zip(_forward_and_gradients(reference, x), _forward_and_gradients(padded, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(tf.reduce_max(tf.abs(want))))


@pytest.mark.parametrize("size", [16, 17])
def test_at_stride_2_it_pads_both_sides_like_pytorch(size):
    x = tf.random.stateless_normal((1, size, size, 2), seed=(3, 4))
    layer = PaddedConv2D(3, 3, strides=2)
    y = layer(x)
    manual = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), layer.kernel, 2, "VALID")
    np.testing.assert_allclose(y, manual + layer.bias, atol=1e-6)
    assert y.shape[1] == (size + 2 - 3) // 2 + 1
    assert layer.compute_output_shape((None, size, None, 2)) == (None, y.shape[1], None, 3)


def test_config_round_trip():
    layer = PaddedConv2D(4, 3, dilation_rate=2, torch_padding=3, use_bias=False)
    clone = PaddedConv2D.from_config(layer.get_config())
    assert clone.torch_padding == (3, 3) and clone.dilation_rate == (2, 2) and not clone.use_bias
