"""Copy-paste: labelled pixels of the small classes pasted into unlabelled images.

With two labelled images per domain, pseudo-labelling hands the small classes
(sidewalk, car, pavement) pixels that belong to large ones, or starves them
(docs/RESULTS.md). Copy-paste adds labelled evidence of them instead: each
unlabelled crop gets the pixels of a labelled crop whose class is small, with
their true labels, and the rest keeps the weak view's pseudo-labels (AEL,
Hu et al. 2021, "adaptive copy-paste", here with a fixed rule for "small").
The decoder learns the small classes on new backgrounds, the unlabelled ones.

A class is small when it holds less than 1 / C of the labelled pixels of the
batch, and unlabelled crop i gets labelled crop ``i mod B``. The input
pipeline builds the view on the global batch, before it is split across
replicas and workers (``pipeline.train_dataset(copy_paste=True)``), so the
rule and the pairs do not depend on the number of replicas, and no
collective runs in the step for it. Nothing is random: the view is a
function of the batch.

``paste_within_labelled`` is the same rule between labelled crops only
(``data.augment.copy_paste``): a plain augmentation that any method can use,
the control that says how much of copy-paste's gain is augmentation rather
than the unlabelled images.
"""

import tensorflow as tf

from usss_tf import losses
from usss_tf.domains import IGNORE_LABEL


def small_classes(labels, num_classes, ignore_label=IGNORE_LABEL):
    """bool [C]: the classes with less than 1 / C of the labelled pixels of ``labels``."""
    counts = losses.labelled_class_counts(labels, num_classes, ignore_label)
    return counts / tf.maximum(tf.reduce_sum(counts), 1.0) < 1.0 / tf.cast(num_classes, tf.float32)


def _small_class_pixels(labels, small, ignore_label):
    """bool [B, H, W]: the pixels of ``labels`` whose class is in ``small`` (bool [C])."""
    known = labels != ignore_label
    return tf.gather(small, tf.where(known, labels, 0)) & known


def paste_small_classes(images, labels, unlabeled, num_classes, ignore_label=IGNORE_LABEL):
    """Unlabelled crops with the small classes' labelled pixels pasted in.

    Args:
      images: float [B, H, W, 3] labelled crops (0..255, the pipeline's augmentation done).
      labels: int [B, H, W] their labels (``ignore_label`` where unknown).
      unlabeled: float [U, H, W, 3] unlabelled crops of the same size.
      num_classes: C.
    Returns:
      (pasted [U, H, W, 3], mask bool [U, H, W] of the pasted pixels, labels int [U, H, W]
      of the pasted pixels: the labelled crop's there, ``ignore_label`` elsewhere).
    """
    labels = tf.cast(labels, tf.int32)
    partner = tf.range(tf.shape(unlabeled)[0]) % tf.shape(labels)[0]
    source_labels = tf.gather(labels, partner)
    mask = _small_class_pixels(source_labels, small_classes(labels, num_classes, ignore_label), ignore_label)
    source = tf.cast(tf.gather(images, partner), unlabeled.dtype)
    pasted = tf.where(mask[..., None], source, unlabeled)
    return pasted, mask, tf.where(mask, source_labels, ignore_label)


def paste_within_labelled(images, labels, num_classes, ignore_label=IGNORE_LABEL):
    """Labelled crops with the next crop's small-class pixels pasted in, labels with them.

    Crop i gets crop ``(i + 1) mod B``'s pixels of the small classes (the rule of
    ``small_classes`` over the whole batch) and their labels; with B = 1 nothing
    changes.

    Args:
      images: float [B, H, W, 3] labelled crops.
      labels: int [B, H, W] their labels (``ignore_label`` where unknown).
    Returns:
      (images [B, H, W, 3], labels [B, H, W]).
    """
    labels = tf.cast(labels, tf.int32)
    partner = (tf.range(tf.shape(labels)[0]) + 1) % tf.shape(labels)[0]
    source_labels = tf.gather(labels, partner)
    mask = _small_class_pixels(source_labels, small_classes(labels, num_classes, ignore_label), ignore_label)
    pasted = tf.where(mask[..., None], tf.gather(images, partner), images)
    return pasted, tf.where(mask, source_labels, labels)
