"""Segmentation metrics from a confusion matrix: IoU per class, mIoU, pixel accuracy.

Ignored pixels (``IGNORE_LABEL``) and labels outside the class range never
count. A class that occurs neither in the labels nor in the predictions has
no IoU (NaN) and is left out of the mean, as in the Cityscapes evaluation.
"""

import keras
import numpy as np
import tensorflow as tf

from usss_tf.domains import IGNORE_LABEL


def confusion_matrix(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
    """Numpy confusion matrix [true, predicted] over the valid pixels."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    index = labels[valid] * num_classes + predictions[valid]
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion):
    """IoU of each class; NaN where the class has no true and no predicted pixel."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def summarize(confusion, class_names=None):
    """The figures a report needs, as plain Python values.

    When ``class_names`` is shorter than the matrix, the remaining columns
    count predictions outside the label space (e.g. a submitted prediction of
    a void id): they are errors for the true class but have no IoU of their own.
    """
    confusion = np.asarray(confusion)
    names = class_names or [str(i) for i in range(len(confusion))]
    ious = iou_per_class(confusion)[: len(names)]
    total = confusion.sum()
    return {
        "miou": float(np.nanmean(ious)) if np.any(~np.isnan(ious)) else 0.0,
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, ious)},
        "pixel_accuracy": float(np.trace(confusion) / total) if total else 0.0,
    }


@keras.saving.register_keras_serializable("usss_tf")
class ConfusionMatrix(keras.metrics.Metric):
    """Streaming confusion matrix whose ``result()`` is the mIoU."""

    def __init__(self, num_classes, ignore_label=IGNORE_LABEL, name="miou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.matrix = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros", dtype="float64", name="matrix"
        )

    def update_state(self, labels, predictions, sample_weight=None):
        labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
        predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
        valid = (labels != self.ignore_label) & (labels >= 0) & (labels < self.num_classes)
        index = tf.boolean_mask(labels * self.num_classes + predictions, valid)
        counts = tf.math.bincount(
            tf.cast(index, tf.int32), minlength=self.num_classes**2,
            maxlength=self.num_classes**2, dtype=tf.float64,
        )
        self.matrix.assign_add(tf.reshape(counts, (self.num_classes, self.num_classes)))

    def result(self):
        m = tf.convert_to_tensor(self.matrix)
        true_positive = tf.linalg.diag_part(m)
        union = tf.reduce_sum(m, 0) + tf.reduce_sum(m, 1) - true_positive
        present = union > 0
        iou = tf.math.divide_no_nan(true_positive, union)
        count = tf.reduce_sum(tf.cast(present, tf.float64))
        return tf.cast(tf.math.divide_no_nan(tf.reduce_sum(iou), count), tf.float32)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ignore_label": self.ignore_label}
