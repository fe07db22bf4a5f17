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

Evaluation uses the same matching the other way round
(``usss_tf.transfer``, ``decoder_colour_matched``): each image of domain A
moved from its own moments (``image_moments``) to those of domain B's
labelled training images (``labelled_set_moments``) before B's decoder reads
it, so the transfer figure is not only a measure of how far A's colours are
from B's.
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


def image_moments(images):
    """(mean, std), float64 [B, 1, 1, 3]: each image's own channel moments over all its pixels."""
    images = tf.cast(images, tf.float64)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    variance = tf.reduce_mean(tf.square(images - mean), axis=[1, 2], keepdims=True)
    return mean, tf.sqrt(tf.maximum(variance, 1e-6))


def labelled_set_moments(pairs, ignore_label=IGNORE_LABEL):
    """(mean, std), float64 [3]: per channel over the known pixels of a set of images.

    Args:
      pairs: iterable of (image [H, W, 3], label [h, w]), any sizes (each label
        resized to its image by nearest neighbour, as ``channel_moments`` does).
    Raises:
      ValueError: no known pixel in the set.
    """
    count, sums, squares = 0.0, tf.zeros([3], tf.float64), tf.zeros([3], tf.float64)
    for image, label in pairs:
        image = tf.cast(image, tf.float64)
        known = tf.cast(tf.not_equal(tf.cast(label, tf.int32), ignore_label), tf.float64)[..., None]
        known = tf.image.resize(known, tf.shape(image)[:2], method="nearest")
        count += float(tf.reduce_sum(known))
        sums += tf.reduce_sum(image * known, axis=[0, 1])
        squares += tf.reduce_sum(tf.square(image) * known, axis=[0, 1])
    if count == 0:
        raise ValueError("no labelled pixel to take colour moments from")
    mean = sums / count
    return mean, tf.sqrt(tf.maximum(squares / count - tf.square(mean), 1e-6))


def match_colours(images, moments, reference_moments):
    """``images`` (0-255, any float or int dtype) moved from their ``channel_moments``
    ``moments`` to ``reference_moments`` (each channel: subtract the mean, scale by the
    std ratio, add the reference mean), clipped to [0, 255], in ``images``' dtype.
    Moments of shape [3] apply to the whole batch, [B, 1, 1, 3] image by image."""
    (mean, std), (reference_mean, reference_std) = moments, reference_moments
    matched = (tf.cast(images, tf.float64) - mean) / std * reference_std + reference_mean
    return tf.cast(tf.clip_by_value(matched, 0.0, 255.0), tf.convert_to_tensor(images).dtype)
