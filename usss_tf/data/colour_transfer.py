"""Colour transfer: one domain's labelled crops in another domain's colours.

``loss.cross_domain_supervision`` trains domain A's decoder on domain B's
labelled crops (through the class correspondence). Those crops look like B:
another light, other facade and road colours. With
``data.augment.cross_domain_colour`` the term sees them with each channel's
mean and standard deviation matched to A's labelled crops of the same step
(Reinhard et al., "Color transfer between images", 2001, here in RGB), so A's
decoder learns B's labels on pixels that look more like its own domain's.

Statistics are over the labelled pixels only (padding and ignored pixels are
left out) and over the global batch (summed across replicas; once per domain
and step), so one device and several replicas transfer the same colours.
"""

import tensorflow as tf

from usss_tf import losses
from usss_tf.domains import IGNORE_LABEL


def channel_moments(images, labels, ignore_label=IGNORE_LABEL):
    """(mean, std), float64 [3] each: per channel over the pixels of ``images``
    [B, H, W, 3] whose label in ``labels`` [B, h, w] is not ``ignore_label``
    (labels resized to the images' size by nearest neighbour), over the global batch.

    In float64, mean first, then the squared deviations from it: in float32 the
    sums' rounding depends on how the batch is split over replicas (a few 1e-4
    of a grey level in the colours), and the pseudo-label thresholds of the
    unlabelled terms turn differences that small into other targets.
    """
    images = tf.cast(images, tf.float64)
    known = tf.cast(tf.not_equal(tf.cast(labels, tf.int32), ignore_label), tf.float64)[..., None]
    known = tf.image.resize(known, tf.shape(images)[1:3], method="nearest")
    count = tf.maximum(losses.replica_sum(tf.reduce_sum(known)), 1.0)
    mean = losses.replica_sum(tf.reduce_sum(images * known, axis=[0, 1, 2])) / count
    deviations = losses.replica_sum(tf.reduce_sum(tf.square(images - mean) * known, axis=[0, 1, 2]))
    return mean, tf.sqrt(tf.maximum(deviations / count, 1e-6))


def match_colours(images, moments, reference_moments):
    """``images`` (0-255, any float or int dtype) moved from their ``channel_moments``
    ``moments`` to ``reference_moments`` (each channel: subtract the mean, scale by the
    std ratio, add the reference mean), clipped to [0, 255], in ``images``' dtype."""
    (mean, std), (reference_mean, reference_std) = moments, reference_moments
    matched = (tf.cast(images, tf.float64) - mean) / std * reference_std + reference_mean
    return tf.cast(tf.clip_by_value(matched, 0.0, 255.0), tf.convert_to_tensor(images).dtype)
