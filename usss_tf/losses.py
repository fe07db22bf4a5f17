"""The loss terms of universal semi-supervised segmentation.

All functions take float logits/embeddings and return float32 scalars, so they
stay exact under mixed precision. Pixels labelled ``IGNORE_LABEL`` never count.
"""

import tensorflow as tf

from usss_tf.domains import IGNORE_LABEL


def masked_cross_entropy_sum(labels, logits, ignore_label=IGNORE_LABEL):
    """(sum of softmax cross-entropy over the labelled pixels, number of labelled pixels)."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    weights = tf.cast(valid, tf.float32)
    return tf.reduce_sum(per_pixel * weights), tf.reduce_sum(weights)


def masked_cross_entropy(labels, logits, ignore_label=IGNORE_LABEL):
    """Mean softmax cross-entropy over the pixels whose label is not ignored.

    Args:
      labels: int [B, H, W] train ids, ``ignore_label`` where unknown.
      logits: float [B, H, W, C].
    Returns:
      float32 scalar; 0 when no pixel is labelled.
    """
    total, count = masked_cross_entropy_sum(labels, logits, ignore_label)
    return tf.math.divide_no_nan(total, count)


def replica_masked_cross_entropy(labels, logits, ignore_label=IGNORE_LABEL):
    """This replica's share of the global masked cross-entropy, exact across replicas.

    Replicas hold different numbers of labelled pixels, so the mean of their
    means is not the global mean. Each replica returns ``replicas x (its sum)
    / (labelled pixels of all replicas)``: the replicas' average (the step
    divides its loss by the replica count and sums gradients) is the mean over
    every labelled pixel of the global batch. One replica: the plain mean.
    """
    total, count = masked_cross_entropy_sum(labels, logits, ignore_label)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    context = tf.distribute.get_replica_context()
    if replicas == 1 or context is None:
        return tf.math.divide_no_nan(total, count)
    global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return tf.math.divide_no_nan(total, global_count) * float(replicas)


def entropy(logits, axis=-1):
    """Mean Shannon entropy (nats) of ``softmax(logits)`` over all other axes."""
    logits = tf.cast(logits, tf.float32)
    log_p = tf.nn.log_softmax(logits, axis=axis)
    per_pixel = -tf.reduce_sum(tf.exp(log_p) * log_p, axis=axis)
    return tf.reduce_mean(per_pixel)


def centroid_similarity(embeddings, centroids, temperature):
    """Class scores s_c(x) = max_k <e(x), M[c, k]> / tau.

    Args:
      embeddings: float [..., D], unit vectors.
      centroids: float [C, K, D], unit vectors (K centroids per class).
      temperature: tau > 0.
    Returns:
      float32 [..., C]: logits of the label-space distribution p(c | x).
    """
    embeddings = tf.cast(embeddings, tf.float32)
    centroids = tf.cast(centroids, tf.float32)
    dots = tf.einsum("...d,ckd->...ck", embeddings, centroids)
    return tf.reduce_max(dots, axis=-1) / temperature
