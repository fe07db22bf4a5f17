"""Colour transfer of labelled crops into another domain's colours (cross_domain_colour)."""

import numpy as np
import pytest
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


def test_labelled_set_moments_pool_the_known_pixels_of_images_of_any_size():
    rng = np.random.default_rng(3)
    first = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    second = rng.uniform(0, 255, (4, 10, 3)).astype(np.uint8)
    first_labels = rng.integers(0, 3, (3, 4)).astype(np.uint8)  # half the image's size
    first_labels[0] = IGNORE_LABEL
    second_labels = rng.integers(0, 3, (4, 10)).astype(np.uint8)
    second_labels[:, :3] = IGNORE_LABEL
    mean, std = colour_transfer.labelled_set_moments([(first, first_labels), (second, second_labels)])
    first_known = np.repeat(np.repeat(first_labels != IGNORE_LABEL, 2, 0), 2, 1)
    pixels = np.concatenate([first[first_known], second[second_labels != IGNORE_LABEL]]).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std.numpy(), pixels.std(0), rtol=1e-9)


def test_labelled_set_moments_without_a_known_pixel_is_an_error():
    image = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="no labelled pixel"):
        colour_transfer.labelled_set_moments([(image, np.full((2, 2), IGNORE_LABEL, np.uint8))])


def test_image_moments_are_each_images_own():
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (3, 5, 7, 3))
    mean, std = colour_transfer.image_moments(images)
    assert mean.shape == std.shape == (3, 1, 1, 3)
    np.testing.assert_allclose(mean.numpy()[:, 0, 0], images.mean((1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std.numpy()[:, 0, 0], images.std((1, 2)), rtol=1e-9)
