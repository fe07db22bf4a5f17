import numpy as np
import tensorflow as tf

from usss_tf.model.preprocessing import IMAGENET_MEAN, IMAGENET_STD, DomainPreprocessor, scaled_size


def test_scaled_size_rounds_and_never_reaches_zero():
    assert scaled_size(tf.constant([128, 256]), 0.5).numpy().tolist() == [64, 128]
    assert scaled_size(tf.constant([33, 65]), 0.5).numpy().tolist() == [16, 32]  # round half to even
    assert scaled_size(tf.constant([1, 3]), 0.1).numpy().tolist() == [1, 1]


def test_resize_then_normalize():
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (2, 20, 30, 3)), tf.uint8)
    step = DomainPreprocessor(scale=0.5)
    resized = step.resize(images)
    assert resized.dtype == tf.float32 and resized.shape == (2, 10, 15, 3)
    expected = tf.image.resize(tf.cast(images, tf.float32), (10, 15), method="bilinear")
    np.testing.assert_allclose(resized.numpy(), expected.numpy())
    out = step(images)
    np.testing.assert_allclose(out.numpy(), ((expected - IMAGENET_MEAN) / IMAGENET_STD).numpy(),
                               rtol=1e-6)


def test_scale_one_keeps_the_pixels():
    images = tf.constant(np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3) % 256, tf.uint8)
    np.testing.assert_array_equal(DomainPreprocessor().resize(images).numpy(), images.numpy())


def test_config_round_trip():
    step = DomainPreprocessor(scale=0.25, mean=(1, 2, 3), std=(4, 5, 6), name="p")
    clone = DomainPreprocessor.from_config(step.get_config())
    assert (clone.scale, clone.mean, clone.std, clone.name) == (0.25, (1, 2, 3), (4, 5, 6), "p")
