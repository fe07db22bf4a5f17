"""Panels, confusion heatmaps and IoU tables rendered with numpy + PIL."""

import numpy as np

from usss_tf import visualize
from usss_tf.domains import IGNORE_LABEL, get_domain
from usss_tf.metrics import summarize

CAMVID = get_domain("synth_camvid")


def test_panel_row_paints_labels_with_the_palette():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, CAMVID.num_classes, (16, 24))
    truth[0] = IGNORE_LABEL
    image = rng.uniform(0, 255, (16, 24, 3)).astype(np.float32)
    row = visualize.panel_row(CAMVID, image, truth, truth)
    assert row.shape == (16, 3 * 24, 3) and row.dtype == np.uint8
    np.testing.assert_array_equal(row[:, 24:48], CAMVID.colorize(truth))
    np.testing.assert_array_equal(row[:, 24:48], row[:, 48:72])
    assert not row[0, 24:48].any()  # ignore is black
    assert visualize.panel_row(CAMVID, image, truth, truth, truth).shape == (16, 4 * 24, 3)


def test_wide_panels_are_scaled_down_and_rows_stacked():
    labels = np.zeros((600, 1200), np.int64)
    row = visualize.panel_row(CAMVID, np.zeros((600, 1200, 3)), labels, labels, max_width=300)
    assert row.shape == (150, 900, 3)
    stacked = visualize.stack_rows([row, row[:50, :100]])
    assert stacked.shape == (2, 150, 900, 3)


def test_confusion_image_is_row_normalised():
    confusion = np.diag([5, 0, 100])
    confusion[0, 2] = 5  # half of class 0 predicted as class 2
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    image = visualize.confusion_image(confusion, palette, cell=4)
    assert image.shape == (16, 16, 3)
    cell = lambda r, c: tuple(image[4 * (r + 1) + 2, 4 * (c + 1) + 2])  # noqa: E731
    assert cell(2, 2) == tuple(visualize.ramp(1.0))  # all of class 2 right
    assert cell(0, 0) == cell(0, 2) == tuple(visualize.ramp(0.5))
    assert cell(1, 1) == visualize._EMPTY_ROW  # class 1 has no labelled pixel
    assert tuple(image[2, 4 + 2]) == palette[0] and tuple(image[4 * 3 + 2, 2]) == palette[2]


def test_iou_table_lists_every_class_in_train_id_order():
    confusion = np.eye(CAMVID.num_classes, dtype=np.int64) * 10
    confusion[0, 1] = 10
    summary = summarize(confusion, list(CAMVID.class_names))
    table = visualize.iou_table(CAMVID, summary, confusion)
    lines = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [line.split(" | ")[1] for line in lines] == list(CAMVID.class_names)
    assert "| 0 | sky | `#808080` | 0.500 | 0.500 | 1.000 |" in table
