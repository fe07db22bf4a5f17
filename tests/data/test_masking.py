"""Patch masks for masked image modelling: the share, the cells, a function of the seed."""

import numpy as np
import pytest
import tensorflow as tf

from usss_tf.data import masking


@pytest.mark.parametrize("size, patch, ratio, masked_cells", [
    ((32, 64), 16, 0.5, 4),  # 2 x 4 cells
    ((24, 40), 16, 0.6, 4),  # 2 x 3 cells (the last row and column cut to 8 pixels); 3.6 -> 4
    ((16, 16), 16, 0.5, 0),  # one cell: never all of the image
    ((32, 32), 8, 0.01, 1),  # at least one cell
])
def test_a_fixed_share_of_whole_cells_is_masked(size, patch, ratio, masked_cells):
    mask = masking.patch_mask(size, patch, ratio, [4, 2]).numpy()
    assert mask.shape == (*size, 1) and set(np.unique(mask)) <= {0.0, 1.0}
    rows, columns = -(-size[0] // patch), -(-size[1] // patch)
    cells = [mask[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
             for r in range(rows) for c in range(columns)]
    assert all(cell.min() == cell.max() for cell in cells)  # whole cells only
    assert sum(cell.max() for cell in cells) == masked_cells


def test_the_mask_is_a_function_of_its_seed():
    first = masking.patch_mask((32, 64), 8, 0.5, [3, 7])
    np.testing.assert_array_equal(first, masking.patch_mask((32, 64), 8, 0.5, [3, 7]))
    assert not np.array_equal(first, masking.patch_mask((32, 64), 8, 0.5, [3, 8]))


def test_blank_zeroes_the_masked_pixels_only():
    images = tf.fill([1, 8, 8, 3], 2.5)
    masks = tf.reshape(tf.constant([1.0, 0.0] * 32), [1, 8, 8, 1])
    blanked = masking.blank(images, masks).numpy()
    assert (blanked[masks.numpy()[..., 0] == 1] == 0).all()
    assert (blanked[masks.numpy()[..., 0] == 0] == 2.5).all()
