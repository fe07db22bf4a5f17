"""Class hue: labelled pixels of the classes whose colour is not their cue, in other hues.

With two labelled images a domain shows a few cars, each in its own colour;
the decoder learns those colours, and a car of another colour in the
validation images is missed (docs/RESULTS.md, "Where the gap is"). Turning
every labelled pixel's hue would teach that vegetation may be purple; turning
only the classes whose labelled pixels already show many hues teaches the
invariance the labelled set itself shows.

Which classes: the saturation-weighted resultant length of the hue angle over
a class's labelled pixels (``hue_concentration``), 1 when every pixel has one
hue, near 0 when hues spread round the circle. Classes below
``max_concentration`` are hue-free. Grey pixels (saturation near 0) weigh
nothing, and turning their hue changes them little.

How: each labelled crop turns each hue-free class by its own random angle
(with probability ``probability``, else keeps it), in HSV, saturation and
value kept; a function of the crop's stateless seed, like every augmentation.
"""

import numpy as np
import tensorflow as tf

from usss_tf.domains import IGNORE_LABEL


def hue_concentration(images, labels, num_classes, ignore_label=IGNORE_LABEL):
    """float64 [C] resultant length of the saturation-weighted hue per class, and
    float64 [C] the saturation mass behind it (0: the class has no coloured pixel).

    Args:
      images: iterable of uint8/float [H, W, 3] arrays (0..255).
      labels: iterable of int [H, W] train ids (``ignore_label`` where unknown).
    """
    resultant = np.zeros([num_classes], np.complex128)
    mass = np.zeros([num_classes], np.float64)
    for image, label in zip(images, labels):
        hsv = tf.image.rgb_to_hsv(tf.cast(image, tf.float32) / 255.0).numpy().astype(np.float64)
        label = np.asarray(label).astype(np.int64)
        known = label != ignore_label
        weight = hsv[..., 1][known]
        angle = np.exp(2j * np.pi * hsv[..., 0][known])
        classes = label[known]
        resultant += np.bincount(classes, weight * angle.real, num_classes) \
            + 1j * np.bincount(classes, weight * angle.imag, num_classes)
        mass += np.bincount(classes, weight, num_classes)
    return np.abs(resultant) / np.maximum(mass, 1e-12), mass


def hue_free_classes(images, labels, num_classes, max_concentration, ignore_label=IGNORE_LABEL):
    """bool [C]: the classes with coloured labelled pixels whose hue concentration is
    below ``max_concentration``."""
    concentration, mass = hue_concentration(images, labels, num_classes, ignore_label)
    return (mass > 0) & (concentration < max_concentration)


def turn_class_hues(image, label, hue_free, probability, seed, ignore_label=IGNORE_LABEL):
    """``image`` with each hue-free class's pixels turned by one random hue angle.

    Args:
      image: float [H, W, 3] in 0..255.
      label: int [H, W] train ids of ``image``.
      hue_free: bool [C].
      probability: each hue-free class of the crop is turned with this probability.
      seed: int [2] stateless seed.
    Returns:
      float [H, W, 3] in 0..255.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    num_classes = tf.shape(hue_free)[0]
    angles = tf.random.stateless_uniform([num_classes], seeds[0])
    turned = hue_free & (tf.random.stateless_uniform([num_classes], seeds[1]) < probability)
    shift = tf.where(turned, angles, 0.0)
    label = tf.cast(label, tf.int32)
    known = label != ignore_label
    safe = tf.where(known, label, 0)
    pixel_shift = tf.where(known, tf.gather(shift, safe), 0.0)
    pixel_turned = known & tf.gather(turned, safe)
    hsv = tf.image.rgb_to_hsv(image / 255.0)
    hue = tf.math.floormod(hsv[..., 0] + pixel_shift, 1.0)
    rgb = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))
    return tf.where(pixel_turned[..., None], tf.clip_by_value(rgb, 0.0, 1.0) * 255.0, image)
