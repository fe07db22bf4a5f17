"""Strong views for consistency: deterministic per seed, the box and the paste as specified."""

import numpy as np
import tensorflow as tf

from usss_tf import config as config_lib
from usss_tf.data import strong_views


def _image(seed=0, size=(24, 40)):
    return tf.constant(np.random.default_rng(seed).uniform(0, 255, (*size, 3)), tf.float32)


def test_strong_view_is_a_function_of_its_seed():
    config = config_lib.ConsistencyConfig(color_jitter=1.0, grayscale=0.5, blur=0.5)
    image = _image()
    first = strong_views.strong_photometric(image, [3, 7], config)
    np.testing.assert_array_equal(first, strong_views.strong_photometric(image, [3, 7], config))
    assert not np.array_equal(first, strong_views.strong_photometric(image, [3, 8], config))
    assert first.shape == image.shape and 0 <= float(tf.reduce_min(first)) <= float(tf.reduce_max(first)) <= 255


def test_with_every_probability_zero_the_strong_view_is_the_weak_one():
    config = config_lib.ConsistencyConfig(color_jitter=0.0, grayscale=0.0, blur=0.0)
    image = _image(1)
    np.testing.assert_allclose(strong_views.strong_photometric(image, [1, 2], config), image, atol=1e-4)


def test_grayscale_and_blur_do_what_they_say():
    image = _image(2)
    gray = strong_views.strong_photometric(
        image, [0, 0], config_lib.ConsistencyConfig(color_jitter=0.0, grayscale=1.0, blur=0.0)).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 1], atol=1e-4)
    np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-4)
    blurred = strong_views.strong_photometric(
        image, [0, 0], config_lib.ConsistencyConfig(color_jitter=0.0, grayscale=0.0, blur=1.0)).numpy()
    # Blurring white noise lowers its pixel-to-pixel variation and keeps its mean.
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.8 * np.abs(np.diff(image.numpy(), axis=1)).mean()
    np.testing.assert_allclose(blurred.mean(), image.numpy().mean(), rtol=0.05)


def test_cutmix_box_is_one_rectangle_of_the_drawn_area_or_nothing():
    size = (32, 64)
    areas = []
    for i in range(40):
        box = strong_views.cutmix_box(size, [i, 1], probability=1.0).numpy()
        rows, cols = np.nonzero(box)
        assert rows.size, f"seed {i}: no box drawn with probability 1"
        # A filled rectangle: its bounding box is all ones.
        assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        areas.append(box.mean())
        np.testing.assert_array_equal(box, strong_views.cutmix_box(size, [i, 1], probability=1.0))
    assert 0.01 <= min(areas) and max(areas) <= 0.45 and np.std(areas) > 0.02
    assert not strong_views.cutmix_box(size, [0, 1], probability=0.0).numpy().any()


def test_partners_pair_neighbours_and_an_odd_last_sample_keeps_itself():
    np.testing.assert_array_equal(strong_views.partner_indices(4), [1, 0, 3, 2])
    np.testing.assert_array_equal(strong_views.partner_indices(3), [1, 0, 2])


def test_paste_takes_the_box_from_the_partner_for_images_and_labels_alike():
    images = tf.reshape(tf.range(2 * 2 * 3 * 1, dtype=tf.float32), [2, 2, 3, 1])
    labels = tf.constant([[[1, 1, 1], [1, 1, 1]], [[2, 2, 2], [2, 2, 2]]])
    boxes = tf.constant([[[0, 1, 1], [0, 0, 0]], [[1, 0, 0], [1, 0, 0]]], tf.float32)
    mixed = strong_views.paste_partner(images, boxes).numpy()[..., 0]
    np.testing.assert_array_equal(mixed, [[[0, 7, 8], [3, 4, 5]], [[0, 7, 8], [3, 10, 11]]])
    mixed_labels = strong_views.paste_partner(labels, boxes).numpy()
    np.testing.assert_array_equal(mixed_labels, [[[1, 2, 2], [1, 1, 1]], [[1, 2, 2], [1, 2, 2]]])
    assert mixed_labels.dtype == np.int32
