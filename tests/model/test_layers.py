"""PaddedConv2D: PyTorch's symmetric padding, TensorFlow's native dilated convolution."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from usss_tf.model import layers
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


@pytest.mark.parametrize("size,dilation,padding", [
    ((16, 16), (2, 2), None), ((15, 17), (2, 4), None), ((9, 9), (3, 1), None), ((13, 11), (2, 2), 1),
])
def test_space_to_batch_path_equals_the_native_dilated_convolution(size, dilation, padding, monkeypatch):
    x = tf.random.stateless_normal((2, *size, 4), seed=(5, 6))
    native = PaddedConv2D(5, 3, dilation_rate=dilation, torch_padding=padding)
    fallback = PaddedConv2D(5, 3, dilation_rate=dilation, torch_padding=padding)
    native.build(x.shape)
    fallback.build(x.shape)
    fallback.set_weights(native.get_weights())
    if not layers.has_native_dilated_gradient("float32"):
        pytest.skip("no native dilated gradient here (oneDNN off) to compare with")
    want = _forward_and_gradients(native, x)
    # As on a machine without the native gradient kernel (oneDNN off).
    monkeypatch.setitem(layers._NATIVE_DILATED_GRADIENT, "float32", False)
    got = _forward_and_gradients(fallback, x)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(tf.reduce_max(tf.abs(w))))


def test_float16_dilated_convolution_trains_on_this_machine():
    # TensorFlow's CPU kernels refuse the float16 gradient of a dilated convolution
    # unless oneDNN has float16 (AVX512-FP16); the layer then takes SpaceToBatch.
    x = tf.random.stateless_normal((2, 12, 16, 4), seed=(1, 2))
    reference = PaddedConv2D(5, 3, dilation_rate=2)
    half = PaddedConv2D(5, 3, dilation_rate=2, dtype="mixed_float16")
    reference.build(x.shape)
    half.build(x.shape)
    half.set_weights(reference.get_weights())
    want = _forward_and_gradients(reference, x)
    got = _forward_and_gradients(half, tf.cast(x, tf.float16))
    assert got[0].dtype == tf.float16
    for w, g in zip(want, got):
        np.testing.assert_allclose(tf.cast(g, tf.float32), w, rtol=2e-2, atol=2e-2 * float(tf.reduce_max(tf.abs(w))))


def test_config_round_trip():
    layer = PaddedConv2D(4, 3, dilation_rate=2, torch_padding=3, use_bias=False)
    clone = PaddedConv2D.from_config(layer.get_config())
    assert clone.torch_padding == (3, 3) and clone.dilation_rate == (2, 2) and not clone.use_bias


def _batch_norm_step(layer, x, training):
    @tf.function
    def run():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            # A loss that is not a plain sum, so the input gradient is not ~0.
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 3)
        return [y, *tape.gradient(loss, [x, layer.gamma, layer.beta])]

    return run()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_equals_keras_batch_norm(training, policy):
    """Same outputs, gradients and moving statistics as Keras' layer, in training and inference."""
    from usss_tf.model.layers import FusedBatchNormalization

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        x = 3.0 + 2.0 * tf.random.stateless_normal((3, 5, 7, 6), seed=(5, 6))
        x = tf.cast(x, keras.config.dtype_policy().compute_dtype)
        reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
        fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
        reference.build(x.shape)
        fused.build(x.shape)
        rng = np.random.default_rng(0)
        weights = [rng.uniform(0.5, 1.5, 6), rng.normal(0, 1, 6), rng.normal(0, 1, 6), rng.uniform(1, 2, 6)]
        reference.set_weights(weights)
        fused.set_weights(weights)
        want = _batch_norm_step(reference, x, training)
        got = _batch_norm_step(fused, x, training)
        assert got[0].dtype == want[0].dtype
        tolerance = 1e-4 if policy == "float32" else 2e-2
        for w, g in zip(want, got):
            w = tf.cast(w, tf.float32).numpy()
            np.testing.assert_allclose(tf.cast(g, tf.float32), w, rtol=tolerance,
                                       atol=tolerance * np.abs(w).max())
        for w, g in zip(reference.non_trainable_weights, fused.non_trainable_weights):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5)
        if training:  # the moving statistics moved
            assert not np.allclose(fused.moving_mean.numpy(), weights[2])
    finally:
        keras.config.set_dtype_policy(previous)


def test_synchronized_batch_norm_keeps_the_keras_path():
    from usss_tf.model.layers import FusedBatchNormalization, batch_norm

    layer = batch_norm(True, "bn")
    assert isinstance(layer, FusedBatchNormalization) and layer.synchronized
    clone = FusedBatchNormalization.from_config(layer.get_config())
    assert clone.synchronized and clone.momentum == 0.9 and clone.epsilon == 1e-5
    x = tf.random.stateless_normal((2, 3, 4, 5), seed=(7, 8))
    clone.build(x.shape)
    y = clone(x, training=True)
    np.testing.assert_allclose(tf.reduce_mean(y, [0, 1, 2]), np.zeros(5), atol=1e-5)


_WITHOUT_ONEDNN = """
import numpy as np, tensorflow as tf
from usss_tf.model.layers import PaddedConv2D, has_native_dilated_gradient
assert not has_native_dilated_gradient("float32")
layer = PaddedConv2D(3, 3, dilation_rate=2)
x = tf.random.stateless_normal((1, 9, 10, 2), seed=(1, 2))
layer.build(x.shape)
@tf.function
def step():
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y * y)
    return y, tape.gradient(loss, layer.kernel)
y, grad = step()
x64, k64 = np.pad(x.numpy().astype(np.float64), [(0, 0), (2, 2), (2, 2), (0, 0)]), layer.kernel.numpy().astype(np.float64)
want = sum(np.einsum("bhwc,cf->bhwf", x64[:, 2 * i:2 * i + 9, 2 * j:2 * j + 10], k64[i, j])
           for i in range(3) for j in range(3)) + layer.bias.numpy()
np.testing.assert_allclose(y.numpy(), want, rtol=1e-4, atol=1e-4)
assert np.isfinite(grad.numpy()).all()
print("ok")
"""


def test_dilated_convolution_trains_with_onednn_off():
    # TF_ENABLE_ONEDNN_OPTS=0 (asked for exact reproducibility, or a CPU build
    # without oneDNN): TensorFlow has no dilated gradient kernel on CPU at all.
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", _WITHOUT_ONEDNN], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
