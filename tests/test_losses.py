import math

import numpy as np
import pytest
import tensorflow as tf

from usss_tf import losses
from usss_tf.domains import IGNORE_LABEL


def test_masked_cross_entropy_matches_hand_computation_and_skips_ignore():
    logits = np.array([[[[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]]]], np.float32)  # [1, 1, 3, 2]
    labels = np.array([[[0, 1, 255]]], np.int32)
    expected = (
        -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(1) / (math.exp(1) + 1))
    ) / 2
    assert float(losses.masked_cross_entropy(labels, logits)) == pytest.approx(expected, rel=1e-6)


def test_masked_cross_entropy_is_zero_when_everything_is_ignored():
    logits = tf.random.normal([2, 4, 4, 3])
    labels = tf.fill([2, 4, 4], 255)
    assert float(losses.masked_cross_entropy(labels, logits)) == 0.0


def test_entropy_of_uniform_and_peaked_distributions():
    uniform = tf.zeros([2, 3, 3, 4])
    assert float(losses.entropy(uniform)) == pytest.approx(math.log(4), rel=1e-6)
    p = np.array([0.7, 0.2, 0.1])
    expected = -(p * np.log(p)).sum()
    logits = tf.constant(np.log(p)[None, :], tf.float32)
    assert float(losses.entropy(logits)) == pytest.approx(expected, rel=1e-5)


def test_centroid_similarity_takes_the_best_centroid_per_class():
    e = np.array([[1.0, 0.0]], np.float32)
    centroids = np.array(
        [
            [[0.0, 1.0], [1.0, 0.0]],  # class 0: the second centroid matches exactly
            [[-1.0, 0.0], [0.6, 0.8]],  # class 1: best dot 0.6
        ],
        np.float32,
    )
    sim = losses.centroid_similarity(e, centroids, temperature=0.5).numpy()
    np.testing.assert_allclose(sim, [[1.0 / 0.5, 0.6 / 0.5]], rtol=1e-6)


def test_losses_are_float32_under_float16_inputs():
    logits = tf.cast(tf.random.normal([1, 2, 2, 3]), tf.float16)
    assert losses.entropy(logits).dtype == tf.float32
    assert losses.masked_cross_entropy(tf.zeros([1, 2, 2], tf.int32), logits).dtype == tf.float32


def test_pseudo_label_cross_entropy_counts_confident_pixels_over_all_valid_ones():
    logits = np.array([[[[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0, 1.0]]]], np.float32)  # [1, 1, 4, 2]
    pseudo = np.array([[[0, 0, 1, 1]]], np.int32)
    confidence = np.array([[[0.99, 0.5, 0.97, 0.99]]], np.float32)  # pixel 1 below the threshold
    valid = np.array([[[1.0, 1.0, 1.0, 0.0]]], np.float32)  # pixel 3 is crop padding
    ce = [-math.log(math.exp(2) / (math.exp(2) + 1)), -math.log(1 / (math.exp(3) + 1))]
    expected = sum(ce) / 3  # two confident valid pixels, three valid ones
    value = losses.pseudo_label_cross_entropy(pseudo, confidence, valid, logits, threshold=0.95)
    assert float(value) == pytest.approx(expected, rel=1e-6)
    nothing_confident = losses.pseudo_label_cross_entropy(pseudo, confidence, valid, logits, threshold=1.0)
    assert float(nothing_confident) == 0.0


def test_distribution_alignment_boosts_the_classes_the_model_under_predicts():
    # Two pixels, two classes; the model says class 0 everywhere, the labels are half class 1.
    probabilities = np.array([[[[0.9, 0.1], [0.6, 0.4]]]], np.float32)
    valid = np.array([[[1.0, 1.0]]], np.float32)
    labels = np.array([[[0, 1, 1, 0, 255]]], np.int32)
    aligned = losses.align_distribution(probabilities, valid, labels, smoothing=0.0).numpy()
    predicted = np.array([0.75, 0.25])  # mean prediction over valid pixels
    expected = probabilities * (np.array([0.5, 0.5]) / predicted)
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(aligned, expected, rtol=1e-6)
    assert aligned[0, 0, 1].argmax() == 1  # the 0.6/0.4 pixel flips to the under-predicted class
    # Padding does not count towards the model's mean prediction.
    padded = losses.align_distribution(probabilities, np.array([[[1.0, 0.0]]], np.float32), labels,
                                       smoothing=0.0).numpy()
    np.testing.assert_allclose(padded[0, 0, 0], [0.5, 0.5], rtol=1e-6)


def test_distribution_alignment_to_the_labelled_sets_frequency_ignores_the_batchs_labels():
    probabilities = np.array([[[[0.9, 0.1], [0.6, 0.4]]]], np.float32)
    valid = np.array([[[1.0, 1.0]]], np.float32)
    batch_labels = np.array([[[0, 0, 0, 0, 255]]], np.int32)  # this batch: class 0 only
    prior = np.array([[0.25, 0.75], [0.25, 0.75]], np.float32)  # one row per labelled crop
    aligned = losses.align_distribution(probabilities, valid, batch_labels, smoothing=0.0,
                                        labelled_prior=prior).numpy()
    expected = probabilities * (np.array([0.25, 0.75]) / np.array([0.75, 0.25]))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(aligned, expected, rtol=1e-6)


def test_distribution_alignment_strength_tempers_the_ratio():
    probabilities = np.array([[[[0.9, 0.1], [0.6, 0.4]]]], np.float32)
    valid = np.array([[[1.0, 1.0]]], np.float32)
    labels = np.array([[[0, 1, 1, 0]]], np.int32)  # half class 1; the model predicts 0.25 of it
    half = losses.align_distribution(probabilities, valid, labels, smoothing=0.0, strength=0.5).numpy()
    expected = probabilities * np.sqrt(np.array([0.5, 0.5]) / np.array([0.75, 0.25]))
    np.testing.assert_allclose(half, expected / expected.sum(-1, keepdims=True), rtol=1e-6)
    none = losses.align_distribution(probabilities, valid, labels, smoothing=0.0, strength=0.0).numpy()
    np.testing.assert_allclose(none, probabilities, rtol=1e-6)


def test_class_adaptive_thresholds_lower_the_rarely_confident_classes():
    # Six pixels, three classes: class 0 has 3 confident pixels, class 1 one, class 2 none
    # (its one pixel is below 0.9); the padded pixel (confident class 1) does not count.
    pseudo = np.array([[[0, 0, 0, 1, 2, 1]]], np.int32)
    confidence = np.array([[[0.95, 0.99, 0.91, 0.97, 0.5, 0.99]]], np.float32)
    valid = np.array([[[1, 1, 1, 1, 1, 0]]], np.float32)
    thresholds = losses.class_adaptive_thresholds(pseudo, confidence, valid, 3, 0.9).numpy()
    beta = np.array([1.0, 1 / 3, 0.0])
    np.testing.assert_allclose(thresholds, 0.9 * beta / (2 - beta), rtol=1e-6)
    # Gathered per pixel, they gate the loss: class 1's pixel passes at its lower threshold.
    logits = np.zeros((1, 1, 6, 3), np.float32)
    per_pixel = np.take(thresholds, pseudo)
    loss = losses.pseudo_label_cross_entropy(pseudo, confidence, valid, logits, per_pixel)
    assert float(loss) == pytest.approx(5 * math.log(3) / 5, rel=1e-6)  # every valid pixel passes
    nothing = losses.class_adaptive_thresholds(pseudo, confidence * 0, valid, 3, 0.9).numpy()
    np.testing.assert_array_equal(nothing, [0.0, 0.0, 0.0])


def test_masked_reconstruction_error_counts_only_masked_pixels():
    images = np.zeros((1, 2, 2, 3), np.float32)
    reconstructions = np.zeros((1, 2, 2, 3), np.float32)
    reconstructions[0, 0, 0] = [1.0, 2.0, 3.0]  # masked: error (1 + 4 + 9) / 3
    reconstructions[0, 1, 1] = [3.0, 3.0, 3.0]  # visible: never counts
    masks = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32).reshape(1, 2, 2, 1)
    value = losses.masked_reconstruction_error(images, reconstructions, masks)
    assert value.dtype == tf.float32
    assert float(value) == pytest.approx((14.0 / 3 + 0.0) / 2)
    assert float(losses.masked_reconstruction_error(images, reconstructions, 0 * masks)) == 0.0


def test_partial_label_cross_entropy_sums_the_admitted_classes():
    # Source labels 0 -> {0}, 1 -> {1, 2}, 2 -> no counterpart; last row: ignore.
    label_sets = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0], [0, 0, 0]], np.float32)
    logits = np.log(np.array([[[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]]]],
                             np.float32))
    labels = np.array([[[0, 1, 2, IGNORE_LABEL]]], np.int32)
    total, count = losses.partial_label_cross_entropy_sum(label_sets, labels, logits)
    assert float(count) == 2.0
    assert float(total) == pytest.approx(-np.log(0.5) - np.log(0.6 + 0.3), rel=1e-5)
    # Singleton sets are the ordinary cross-entropy.
    one_hot = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)
    single, n = losses.partial_label_cross_entropy_sum(one_hot, labels[..., :3], logits[:, :, :3])
    plain, m = losses.masked_cross_entropy_sum(labels[..., :3], logits[:, :, :3])
    assert float(single) == pytest.approx(float(plain), rel=1e-5) and float(n) == float(m) == 3.0
    # Nothing counted: 0, and no NaN in the gradient.
    zero = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(zero)
        nothing, _ = losses.partial_label_cross_entropy_sum(label_sets, np.full_like(labels, 2), zero)
    assert float(nothing) == 0.0 and np.isfinite(tape.gradient(nothing, zero).numpy()).all()
