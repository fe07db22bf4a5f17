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


def replica_mean(total, count):
    """This replica's share of a global mean ``sum(total) / sum(count)`` over replicas.

    Replicas hold different numbers of counted pixels, so the mean of their
    means is not the global mean. Each replica returns ``replicas x total /
    (count of all replicas)``: the replicas' average (the step divides its
    loss by the replica count and sums gradients) is the global mean. One
    replica: ``total / count``. 0 when nothing is counted anywhere.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    context = tf.distribute.get_replica_context()
    if replicas == 1 or context is None:
        return tf.math.divide_no_nan(total, count)
    global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return tf.math.divide_no_nan(total, global_count) * float(replicas)


def replica_masked_cross_entropy(labels, logits, ignore_label=IGNORE_LABEL):
    """This replica's share of the masked cross-entropy over every labelled pixel of the
    global batch (``replica_mean``), exact across replicas."""
    return replica_mean(*masked_cross_entropy_sum(labels, logits, ignore_label))


def partial_label_cross_entropy_sum(label_sets, labels, logits):
    """(sum over counted pixels of -log sum_{c in S(y)} p_c, number of counted pixels).

    The cross-entropy against a set of admissible classes per pixel: a label of
    another label space names a concept that one or several of these classes
    make up (another domain's "vehicle" is this one's car or truck), and any
    split of the probability between them is right.

    Args:
      label_sets: float [K + 1, C]: row y is 1 for the classes label y admits;
        the last row (ignore) and the rows of labels without a counterpart are 0,
        and their pixels do not count.
      labels: int [B, H, W] in the other label space (``IGNORE_LABEL`` and any
        id >= K: the last row).
      logits: float [B, H, W, C] in this label space.
    """
    logits = tf.cast(logits, tf.float32)
    label_sets = tf.convert_to_tensor(label_sets, tf.float32)
    last = tf.shape(label_sets)[0] - 1
    labels = tf.cast(labels, tf.int32)
    admitted = tf.gather(label_sets, tf.where((labels >= 0) & (labels < last), labels, last)) > 0
    counted = tf.reduce_any(admitted, axis=-1)
    inside = tf.reduce_logsumexp(tf.where(admitted, logits, tf.float32.min), axis=-1)
    per_pixel = tf.where(counted, tf.reduce_logsumexp(logits, axis=-1) - inside, 0.0)
    return tf.reduce_sum(per_pixel), tf.reduce_sum(tf.cast(counted, tf.float32))


def pseudo_label_cross_entropy(pseudo_labels, confidence, valid, logits, threshold):
    """Consistency loss: cross-entropy against pseudo-labels, confident pixels only.

    As UniMatch: the sum over pixels whose pseudo-label confidence is at
    least ``threshold``, divided by the number of valid pixels (confident or
    not), so the loss grows with the share of confident pixels. Exact across
    replicas (``replica_mean``).

    Args:
      pseudo_labels: int [B, H, W] class ids (argmax of the weak view).
      confidence: float [B, H, W] their probability.
      valid: float [B, H, W], 1 for image pixels, 0 for crop padding.
      logits: float [B, H, W, C] of the perturbed view.
      threshold: the confidence threshold: a scalar, or float [B, H, W] per
        pixel (``class_adaptive_thresholds`` gathered by pseudo-label).
    """
    logits = tf.cast(logits, tf.float32)
    valid = tf.cast(valid, tf.float32)
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(pseudo_labels, tf.int32), logits=logits)
    confident = tf.cast(tf.cast(confidence, tf.float32) >= threshold, tf.float32) * valid
    return replica_mean(tf.reduce_sum(per_pixel * confident), tf.reduce_sum(valid))


def masked_reconstruction_error(images, reconstructions, masks):
    """Masked image modelling: mean squared error over the masked pixels (MAE, SimMIM).

    Args:
      images: float [B, H, W, 3], the normalised crops before masking (the targets).
      reconstructions: float [B, H, W, 3], the reconstruction head's output.
      masks: float [B, H, W, 1], 1 where the encoder saw a blank.
    Returns:
      float32 scalar: the squared error averaged over channels and masked
      pixels of the global batch (``replica_mean``); visible pixels never count.
    """
    error = tf.square(tf.cast(reconstructions, tf.float32) - tf.cast(images, tf.float32))
    masks = tf.cast(masks, tf.float32)
    return replica_mean(tf.reduce_sum(tf.reduce_mean(error, axis=-1, keepdims=True) * masks),
                        tf.reduce_sum(masks))


def replica_sum(value):
    """``value`` summed over the replicas in sync (itself with one replica)."""
    context = tf.distribute.get_replica_context()
    if context is None or tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def class_adaptive_thresholds(pseudo_labels, confidence, valid, num_classes, threshold):
    """Per-class confidence thresholds (FlexMatch's curriculum pseudo-labelling, per batch).

    A class the model is rarely confident about (a small class, at few
    labels) gets a lower threshold, so its pseudo-labels are not all thrown
    away while the frequent classes keep theirs: with ``beta_k`` = confident
    pixels predicted as class k / the most confident pixels of any class
    (over the global batch), class k's threshold is
    ``threshold * beta_k / (2 - beta_k)`` (FlexMatch's convex mapping). The
    most confidently predicted class keeps ``threshold``.

    Args:
      pseudo_labels: int [B, H, W] class ids.
      confidence: float [B, H, W] their probability.
      valid: float [B, H, W], 1 for image pixels.
      num_classes: C.
      threshold: the fixed threshold.
    Returns:
      float32 [C].
    """
    confident = tf.cast(tf.cast(confidence, tf.float32) >= threshold, tf.float32) * tf.cast(valid, tf.float32)
    counts = replica_sum(tf.math.unsorted_segment_sum(
        tf.reshape(confident, [-1]), tf.reshape(tf.cast(pseudo_labels, tf.int32), [-1]), num_classes))
    beta = counts / tf.maximum(tf.reduce_max(counts), 1.0)
    return threshold * beta / (2.0 - beta)


def labelled_class_counts(labels, num_classes, ignore_label=IGNORE_LABEL):
    """float32 [C]: the pixels of each class in ``labels`` (``ignore_label`` pixels left out)."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    labels = tf.boolean_mask(labels, tf.not_equal(labels, ignore_label))
    return tf.math.bincount(labels, minlength=num_classes, maxlength=num_classes, dtype=tf.float32)


def align_distribution(probabilities, valid, labels, ignore_label=IGNORE_LABEL, smoothing=1e-3,
                       labelled_prior=None, strength=1.0):
    """Distribution alignment of pseudo-label probabilities (ReMixMatch; DARS for segmentation).

    A model trained on a few labelled images over-predicts the frequent
    classes (road) and rarely predicts the small ones (sidewalk) with
    confidence, and self-training amplifies that. Each pixel's class
    probabilities are multiplied by (class frequency in the labelled batch)
    / (mean predicted probability over the unlabelled batch), then
    renormalised: the classes the model under-predicts gain confidence.
    Both frequencies are over the global batch (summed across replicas).

    Args:
      probabilities: float [B, H, W, C] of the weak view.
      valid: float [B, H, W], 1 for image pixels of the weak view.
      labels: int [B', H', W'] the domain's labelled batch (``ignore_label`` where unknown).
      labelled_prior: optional float [B', C], the class frequency of the domain's
        whole labelled set, one row per labelled crop
        (``consistency.alignment_target: labelled_set``); it replaces the batch's.
      strength: the ratio is raised to this power (``consistency.alignment_strength``):
        1 aligns fully, 0 not at all.
    """
    num_classes = tf.shape(probabilities)[-1]
    if labelled_prior is None:
        target = replica_sum(labelled_class_counts(labels, num_classes, ignore_label))
    else:
        target = replica_sum(tf.reduce_sum(tf.cast(labelled_prior, tf.float32), axis=0))
    target = (target + smoothing) / (tf.reduce_sum(target) + smoothing * tf.cast(num_classes, tf.float32))
    weights = tf.cast(valid, tf.float32)[..., None]
    predicted = replica_sum(tf.reduce_sum(probabilities * weights, axis=[0, 1, 2]))
    predicted = (predicted + smoothing) / (tf.reduce_sum(predicted) + smoothing * tf.cast(num_classes, tf.float32))
    aligned = probabilities * (target / predicted) ** strength
    return aligned / tf.reduce_sum(aligned, axis=-1, keepdims=True)


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
