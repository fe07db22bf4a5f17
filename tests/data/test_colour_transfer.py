"""Colour transfer of labelled crops into another domain's colours (cross_domain_colour)."""

import numpy as np
import tensorflow as tf

from usss_tf.data import colour_transfer
from usss_tf.domains import IGNORE_LABEL


def _match(images, labels, reference, reference_labels):
    return colour_transfer.match_colours(
        images, colour_transfer.channel_moments(images, labels),
        colour_transfer.channel_moments(reference, reference_labels)).numpy()


def _moments(images, known):
    pixels = images[known]
    return pixels.mean(0), pixels.std(0)


def test_labelled_pixels_take_the_reference_mean_and_std_per_channel():
    rng = np.random.default_rng(0)
    images = rng.uniform(60, 120, (2, 8, 12, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 8, 12)).astype(np.int32)
    labels[0, :, :4] = IGNORE_LABEL
    images[0, :, :4] = 255.0  # Padding-like pixels: left out of the statistics.
    reference = rng.uniform(100, 140, (3, 8, 12, 3)).astype(np.float32)
    reference[..., 2] *= 0.5  # Another tint.
    reference_labels = rng.integers(0, 3, (3, 8, 12)).astype(np.int32)
    reference_labels[2] = IGNORE_LABEL
    reference[2] = 0.0

    out = _match(tf.constant(images), tf.constant(labels), tf.constant(reference),
                 tf.constant(reference_labels))
    known = labels != IGNORE_LABEL
    mean, std = _moments(out, known)
    expected_mean, expected_std = _moments(reference, reference_labels != IGNORE_LABEL)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-4)
    np.testing.assert_allclose(std, expected_std, rtol=1e-3)
    # An affine map per channel: the order of the pixels' values is kept.
    source_mean, source_std = _moments(images, known)
    np.testing.assert_allclose(out[known], (images[known] - source_mean) / source_std * expected_std
                               + expected_mean, rtol=1e-4)
    # Ignored pixels are mapped too (clipped), but do not move the statistics.
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 255.0


def test_labels_at_a_lower_resolution_and_integer_images():
    images = np.zeros((1, 8, 8, 3), np.uint8)
    images[:, :, 4:] = 200
    labels = np.zeros((1, 4, 4), np.int32)  # Resized to the images' 8 x 8 by nearest neighbour.
    reference = np.full((1, 8, 8, 3), 50.0, np.float32)
    reference[:, :4] = 150.0
    out = _match(tf.constant(images), tf.constant(labels), tf.constant(reference), tf.constant(labels))
    assert out.dtype == np.uint8
    assert out[0, 0, 0].tolist() == [50] * 3 and out[0, 0, 7].tolist() == [150] * 3


def test_a_flat_crop_does_not_divide_by_zero():
    images = tf.fill([1, 4, 4, 3], 90.0)
    labels = tf.zeros([1, 4, 4], tf.int32)
    reference = tf.constant(np.random.default_rng(1).uniform(0, 255, (1, 4, 4, 3)), tf.float32)
    out = _match(images, labels, reference, labels)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.mean((0, 1, 2)), reference.numpy().mean((0, 1, 2)), rtol=1e-5)
