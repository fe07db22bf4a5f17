"""Patch masks for masked image modelling (the ``masked`` stage of ``univ_full``).

A crop is cut into ``patch`` x ``patch`` cells; a fixed share ``ratio`` of
them (rounded, at least one, never all) is masked, chosen by a stateless draw
keyed by the sample's seed. So, like every training batch, the masks are a
function of (seed, step): the same run masks the same pixels, also after a
resume. The encoder sees the crop with masked cells blanked (0 after
normalisation: the ImageNet mean colour) and the reconstruction head predicts
their pixels (``losses.masked_reconstruction_error``). Cells over a crop's
padding (a crop larger than the scaled image) are masked and reconstructed
like the others: a constant colour, an easy target (measured that way).
"""

import tensorflow as tf


def patch_mask(size, patch, ratio, seed):
    """float32 [H, W, 1]: 1 on the masked cells of a crop of ``size`` (H, W), else 0.

    Args:
      size: (H, W) of the crop, Python ints.
      patch: the cell's side in pixels; the last row and column of cells may
        be cut off by the crop's edge.
      ratio: the share of cells masked, in (0, 1).
      seed: int [2] stateless seed.
    """
    height, width = size
    rows, columns = -(-height // patch), -(-width // patch)
    cells = rows * columns
    masked = min(max(int(round(ratio * cells)), 1), cells - 1)
    order = tf.argsort(tf.random.stateless_uniform([cells], seed))
    grid = tf.scatter_nd(order[:masked, None], tf.ones([masked], tf.float32), [cells])
    grid = tf.reshape(grid, [rows, columns])
    full = tf.repeat(tf.repeat(grid, patch, axis=0), patch, axis=1)
    return full[:height, :width, None]


def blank(images, masks):
    """Normalised ``images`` [B, H, W, 3] with the masked pixels (``masks`` [B, H, W, 1]) set to 0."""
    return images * (1.0 - tf.cast(masks, images.dtype))
