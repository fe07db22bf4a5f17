import numpy as np
import pytest

from usss_tf import metrics


def test_confusion_and_iou_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 255])
    preds = np.array([0, 1, 1, 1, 0, 2])
    cm = metrics.confusion_matrix(labels, preds, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    summary = metrics.summarize(cm, ["x", "y", "z"])
    assert summary["per_class_iou"] == pytest.approx({"x": 1 / 3, "y": 2 / 3, "z": 0.0})
    assert summary["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert summary["pixel_accuracy"] == pytest.approx(3 / 5)


def test_class_absent_everywhere_is_none_and_left_out_of_the_mean():
    cm = metrics.confusion_matrix(np.array([0, 1]), np.array([0, 1]), 3)
    summary = metrics.summarize(cm)
    assert summary["per_class_iou"]["2"] is None
    assert summary["miou"] == 1.0


def test_streaming_metric_matches_numpy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (3, 8, 8))
    labels[0, 0] = 255
    preds = rng.integers(0, 4, (3, 8, 8))
    metric = metrics.ConfusionMatrix(4)
    metric.update_state(labels, preds)
    expected = metrics.confusion_matrix(labels, preds, 4)
    np.testing.assert_array_equal(np.asarray(metric.matrix), expected)
    assert float(metric.result()) == pytest.approx(metrics.summarize(expected)["miou"], rel=1e-6)
