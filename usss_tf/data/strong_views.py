"""Strong views of unlabelled crops for weak-to-strong consistency (FixMatch, UniMatch).

The training pipeline's augmented unlabelled crop is the *weak* view. Here it
gets a strongly perturbed copy: colour jitter, grayscale and Gaussian blur,
each applied with its own probability (UniMatch's strong augmentation), and a
CutMix box: the region where, in the training step, the strong view of
another unlabelled image of the batch is pasted in (``paste_partner``), with
that image's pseudo-labels. Every draw is stateless, keyed by the sample's
seed, so strong views are a function of (seed, step) like every training
batch: the same run gives the same views, also after a resume.
"""

import math

import tensorflow as tf

_BLUR_RADIUS = 6  # A 13-tap kernel: covers 3 sigma of the largest blur (sigma 2).


def _gray(image):
    """Luma of an RGB image in 0..1, [H, W, 1]."""
    return tf.image.rgb_to_grayscale(image)


def _jitter(image, seeds):
    """Brightness, contrast, saturation x [0.5, 1.5], hue +- 0.25 (torchvision's
    ``ColorJitter(0.5, 0.5, 0.5, 0.25)``), in that order."""
    brightness = tf.random.stateless_uniform([], seeds[0], 0.5, 1.5)
    contrast = tf.random.stateless_uniform([], seeds[1], 0.5, 1.5)
    saturation = tf.random.stateless_uniform([], seeds[2], 0.5, 1.5)
    hue = tf.random.stateless_uniform([], seeds[3], -0.25, 0.25)
    x = tf.clip_by_value(image * brightness, 0.0, 1.0)
    mean = tf.reduce_mean(_gray(x))
    x = tf.clip_by_value((x - mean) * contrast + mean, 0.0, 1.0)
    x = tf.clip_by_value(tf.image.adjust_saturation(x, saturation), 0.0, 1.0)
    return tf.clip_by_value(tf.image.adjust_hue(x, hue), 0.0, 1.0)


def _blur(image, sigma):
    """Separable Gaussian blur of [H, W, 3] with standard deviation ``sigma`` (pixels)."""
    taps = tf.range(-_BLUR_RADIUS, _BLUR_RADIUS + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps / sigma))
    kernel /= tf.reduce_sum(kernel)
    x = tf.pad(image[None], [[0, 0], [_BLUR_RADIUS] * 2, [_BLUR_RADIUS] * 2, [0, 0]], mode="SYMMETRIC")
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    x = tf.nn.depthwise_conv2d(x, horizontal, [1, 1, 1, 1], "VALID")
    x = tf.nn.depthwise_conv2d(x, vertical, [1, 1, 1, 1], "VALID")
    return x[0]


def strong_photometric(image, seed, config):
    """The strong photometric view of ``image`` (float [H, W, 3] in 0..255).

    Args:
      image: the weak view.
      seed: int [2] stateless seed of this sample.
      config: ``ConsistencyConfig`` (probabilities of jitter, grayscale, blur).
    Returns:
      float32 [H, W, 3] in 0..255.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)
    coins = tf.random.stateless_uniform([3], seeds[0])
    x = tf.cast(image, tf.float32) / 255.0
    x = tf.cond(coins[0] < config.color_jitter, lambda: _jitter(x, seeds[1:5]), lambda: x)
    x = tf.cond(coins[1] < config.grayscale, lambda: tf.tile(_gray(x), [1, 1, 3]), lambda: x)
    sigma = tf.random.stateless_uniform([], seeds[5], 0.1, 2.0)
    x = tf.cond(coins[2] < config.blur, lambda: _blur(x, sigma), lambda: x)
    x.set_shape(image.shape)
    return x * 255.0


def cutmix_box(size, seed, probability, min_area=0.02, max_area=0.4, min_aspect=0.3):
    """A CutMix box as a float32 [H, W] mask: 1 inside, 0 outside; all 0 when not drawn.

    With ``probability`` a box of ``min_area``..``max_area`` of the image
    with aspect ratio in ``[min_aspect, 1 / min_aspect]`` (UniMatch's box),
    clipped to the image.
    """
    height, width = size
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
    area = tf.random.stateless_uniform([], seeds[0], min_area, max_area) * float(height * width)
    log_aspect = tf.random.stateless_uniform([], seeds[1], math.log(min_aspect), -math.log(min_aspect))
    aspect = tf.exp(log_aspect)
    box_w = tf.minimum(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), width)
    box_h = tf.minimum(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), height)
    top = tf.random.stateless_uniform([], seeds[2], 0, height - box_h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[3], 0, width - box_w + 1, dtype=tf.int32)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    drawn = tf.random.stateless_uniform([], seeds[4]) < probability
    return tf.cast(inside & drawn, tf.float32)


def partner_indices(batch_size):
    """Which sample pastes into which: ``i`` takes its box from ``i XOR 1`` (pairs 0-1, 2-3, ...).

    Pairs never straddle replicas when each replica's batch is even, so the
    step computes the same with one or several replicas; an odd last sample
    pairs with itself (no paste).
    """
    indices = tf.range(batch_size)
    partners = tf.bitwise.bitwise_xor(indices, 1)
    return tf.where(partners < batch_size, partners, indices)


def paste_partner(values, boxes):
    """CutMix within a batch: ``values[i]`` with ``boxes[i]`` taken from its partner.

    Args:
      values: [B, H, W, ...] (images, probabilities, masks).
      boxes: float [B, H, W] from ``cutmix_box``.
    """
    partners = tf.gather(values, partner_indices(tf.shape(values)[0]))
    box = tf.cast(boxes, values.dtype)
    while len(box.shape) < len(values.shape):
        box = box[..., None]
    return values * (1 - box) + partners * box
