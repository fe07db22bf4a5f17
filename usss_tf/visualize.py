"""Pictures and tables of a segmentation model for people: panels, confusion heatmaps, IoU tables.

Pure numpy + PIL (matplotlib is not a dependency), so the same functions
serve TensorBoard (``usss_tf.monitoring``) and anything else that wants an
image. Label maps are painted with the domain's palette (``Domain.colorize``;
ignore is black), so a prediction and its ground truth compare at a glance.
"""

import numpy as np
from PIL import Image

# Panels wider than this are scaled down: a 2048-pixel Cityscapes frame times
# four panels would not fit a TensorBoard card.
MAX_PANEL_WIDTH = 512

# A perceptually ordered dark-blue -> green -> yellow ramp (viridis, sampled
# at nine points): row-normalised confusion values 0 -> 1.
_RAMP = np.array([
    (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
], np.float64)
_EMPTY_ROW = (48, 48, 48)  # a class with no labelled pixel: no row to normalise.


def _resize(array, size, nearest):
    """Resizes ``[H, W, ...]`` to ``size`` = (H, W): nearest in numpy, bilinear (uint8 RGB) with PIL."""
    height, width = size
    if array.shape[:2] == (height, width):
        return array
    if nearest:  # Label ids: pick source pixels, never blend two ids.
        rows = (np.arange(height) * array.shape[0] // height)
        cols = (np.arange(width) * array.shape[1] // width)
        return array[rows[:, None], cols[None, :]]
    return np.asarray(Image.fromarray(array).resize((width, height), Image.BILINEAR))


def _panel_size(shape, max_width):
    height, width = shape
    if width <= max_width:
        return height, width
    return max(1, round(height * max_width / width)), max_width


def panel_row(domain, image, truth, prediction, centroid_map=None, max_width=MAX_PANEL_WIDTH):
    """One example as panels side by side: input | truth | prediction [| nearest centroid].

    Args:
      domain: the ``Domain`` whose palette paints the label maps.
      image: ``[H, W, 3]`` RGB, 0..255 (any dtype), at the labels' size.
      truth, prediction, centroid_map: integer train ids ``[H, W]`` (ignore = 255).
      max_width: each panel is scaled down to at most this width.
    Returns:
      ``uint8 [h, P * w, 3]`` with P = 3, or 4 with a centroid map.
    """
    size = _panel_size(np.shape(truth), max_width)
    image = np.clip(np.asarray(image, np.float32), 0, 255).round().astype(np.uint8)
    panels = [_resize(image, size, nearest=False)]
    for ids in (truth, prediction, centroid_map):
        if ids is not None:
            panels.append(domain.colorize(_resize(np.asarray(ids, np.int64), size, nearest=True)))
    return np.concatenate(panels, axis=1)


def stack_rows(rows):
    """Rows of possibly different sizes -> ``uint8 [N, H, W, 3]`` at the first row's size."""
    height, width = rows[0].shape[:2]
    return np.stack([_resize(row, (height, width), nearest=False) for row in rows])


def ramp(values):
    """Maps values in [0, 1] to ``uint8`` RGB along the viridis-like ramp."""
    values = np.clip(np.asarray(values, np.float64), 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(values).astype(int)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    frac = (values - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[high] * frac).round().astype(np.uint8)


def row_normalize(confusion):
    """Each row (true class) divided by its pixel count; rows without pixels are NaN."""
    confusion = np.asarray(confusion, np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, confusion / totals, np.nan)


def confusion_image(confusion, palette, cell=None):
    """A row-normalised confusion matrix as a heatmap, class colours along the edges.

    Rows are true classes, columns predicted classes, both in train-id order;
    each cell is the share of the row's pixels (dark = 0, yellow = 1). The top
    row and left column are the classes' palette colours, so a class can be
    found without its name (names are in the IoU table next to the image).

    Args:
      confusion: ``[C, C]`` pixel counts, ``[true, predicted]``.
      palette: ``C`` RGB colours.
      cell: pixels per cell; default keeps the image about 400 pixels wide.
    Returns:
      ``uint8 [(C + 1) * cell, (C + 1) * cell, 3]``.
    """
    normalized = row_normalize(confusion)
    num_classes = normalized.shape[0]
    cell = cell or int(np.clip(400 // (num_classes + 1), 4, 40))
    grid = np.zeros((num_classes + 1, num_classes + 1, 3), np.uint8)
    colours = np.asarray(palette, np.uint8)
    grid[0, 1:] = colours
    grid[1:, 0] = colours
    heat = ramp(np.nan_to_num(normalized))
    heat[np.isnan(normalized)] = _EMPTY_ROW
    grid[1:, 1:] = heat
    image = np.repeat(np.repeat(grid, cell, axis=0), cell, axis=1)
    # One-pixel separators between the colour keys and the matrix.
    image[cell - 1:cell, :] = 0
    image[:, cell - 1:cell] = 0
    return image


def _fmt(value):
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def iou_table(domain, summary, confusion):
    """A Markdown report of one domain's validation: mIoU, then one row per class.

    Columns: class, palette colour (hex), IoU, recall (share of the class's
    pixels predicted as it, the confusion image's diagonal), precision, and the
    class's share of the labelled pixels. Classes are in train-id order, the
    order of the confusion image's rows and columns.
    """
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    truth_total, predicted_total = confusion.sum(axis=1), confusion.sum(axis=0)
    pixels = confusion.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(truth_total > 0, true_positive / truth_total, np.nan)
        precision = np.where(predicted_total > 0, true_positive / predicted_total, np.nan)
        share = truth_total / pixels if pixels else np.full_like(truth_total, np.nan)
    lines = [
        f"**{domain.name}**: mIoU {summary['miou']:.3f}, pixel accuracy "
        f"{summary['pixel_accuracy']:.3f}" + (
            f", {summary['num_images']} images" if "num_images" in summary else ""
        ),
        "",
        "| # | class | colour | IoU | recall | precision | share of pixels |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for c, name in enumerate(domain.class_names):
        colour = "#{:02x}{:02x}{:02x}".format(*domain.palette[c])
        lines.append(
            f"| {c} | {name} | `{colour}` | {_fmt(summary['per_class_iou'].get(name))} | "
            f"{_fmt(recall[c])} | {_fmt(precision[c])} | {_fmt(share[c])} |"
        )
    lines += ["", "IoU – : the class is neither in the labels nor in the predictions (left out of the mIoU)."]
    return "\n".join(lines)
