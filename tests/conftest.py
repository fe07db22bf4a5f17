"""Shared fixtures. TensorFlow logging is quieted before any test imports it."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib

import numpy as np
import pytest
from PIL import Image


def write_camvid_tree(root, num_train=8, num_val=3, size=(32, 64), num_classes=7, seed=0):
    """A tiny CamVid (SegNet) layout tree: images correlated with their labels."""
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            label = np.repeat(rng.integers(0, num_classes, (size[0] // 8, size[1] // 8)), 8, 0)
            label = np.repeat(label, 8, 1).astype(np.uint8)
            image = (label[..., None] * 30 + rng.integers(0, 40, (*size, 3))).astype(np.uint8)
            Image.fromarray(image).save(root / split / f"frame{i:03d}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"frame{i:03d}.png")
    return root


@pytest.fixture
def camvid_tree(tmp_path):
    return write_camvid_tree(tmp_path / "camvid")
