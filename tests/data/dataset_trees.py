"""Tiny dataset trees in each real dataset's on-disk layout, for reader and check tests.

Every image carries its label in the red channel (``image[..., 0] == raw id``
up to JPEG error), so a test can tell from the files alone whether a reader
paired them correctly. Labels are random 8x8 blocks of the raw ids given.
Each writer also drops the files real releases have next to the ones we read
(colour labels, polygons, instance ids, depth), which a reader must ignore.
"""

import json
import pathlib

import numpy as np
from PIL import Image

from usss_tf.data import layouts

SIZE = (32, 64)  # height, width


def write_pair(image_path, label_path, rng, raw_ids, size=SIZE, image_format="PNG"):
    """Writes one image (red = raw id) and its 8-bit label of block-random `raw_ids`."""
    height, width = size
    blocks = rng.choice(np.asarray(raw_ids, dtype=np.uint8), (height // 8, width // 8))
    label = np.kron(blocks, np.ones((8, 8), dtype=np.uint8))
    image = np.stack([label, 255 - label, np.full(size, 90, np.uint8)], -1)
    for path in (image_path, label_path):
        if path is not None:
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 98, "subsampling": 0} if image_format == "JPEG" else {}
    Image.fromarray(image).save(image_path, format=image_format, **options)
    if label_path is not None:
        Image.fromarray(label).save(label_path)
    return label


def red_matches_label(example):
    """Whether an example's image and label were written as a pair by `write_pair`."""
    red = np.asarray(Image.open(example.image).convert("RGB"))[..., 0].astype(int)
    label = np.asarray(Image.open(example.label)).astype(int)
    return red.shape == label.shape and np.abs(red - label).mean() < 3


CITYSCAPES_IDS = tuple(range(34))
IDD_LEVEL3_IDS = tuple(range(26)) + (255,)
CAMVID_IDS = tuple(range(12))
SUNRGBD_IDS = tuple(range(38))


def write_cityscapes_tree(
    root, cities=None, raw_ids=CITYSCAPES_IDS, size=SIZE, seed=0,
    label_suffix="_gtFine_labelIds.png",
):
    """``leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` + ``gtFine/...``.

    `cities` maps split -> {city: number of images}; default two train cities
    and one val city.
    """
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    cities = cities or {"train": {"aachen": 3, "bremen": 2}, "val": {"frankfurt": 2}}
    for split, counts in cities.items():
        for city, count in counts.items():
            for frame in range(count):
                stem = f"{city}_{frame:06d}_{19 + frame:06d}"
                image, label = layouts.CITYSCAPES.example_paths(root, split, city, stem)
                gt = label.parent
                write_pair(image, gt / f"{stem}{label_suffix}", rng, raw_ids, size)
                Image.new("RGB", size[::-1]).save(gt / f"{stem}_gtFine_color.png")
                (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"objects": []}))
    return root


def write_idd_tree(root, sequences=None, raw_ids=IDD_LEVEL3_IDS, size=SIZE, seed=0):
    """IDD: ``leftImg8bit/{split}/{seq}/{frame}_leftImg8bit.png`` + createLabels' level-3 ids."""
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    sequences = sequences or {"train": {"0": 2, "103": 2}, "val": {"7": 2}}
    for split, counts in sequences.items():
        for seq, count in counts.items():
            for i in range(count):
                frame = f"{int(seq) * 1000 + i:06d}"
                image, label = layouts.IDD.example_paths(root, split, seq, frame)
                gt = label.parent
                write_pair(image, label, rng, raw_ids, size)
                Image.new("L", size[::-1]).save(gt / f"{frame}_gtFine_instancelevel3Ids.png")
                (gt / f"{frame}_gtFine_polygons.json").write_text(json.dumps({"objects": []}))
    return root


def write_sunrgbd_folders(root, counts=None, raw_ids=SUNRGBD_IDS, size=SIZE, seed=0):
    """SUN RGB-D, folder form: ``{split}/image/{name}.jpg`` + ``{split}/label37/{name}.png``."""
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (counts or {"train": 4, "test": 2}).items():
        for i in range(1, count + 1):
            image, label = layouts.SUNRGBD.example_paths(root, split, f"img-{i:06d}", ".jpg")
            write_pair(image, label, rng, raw_ids, size, image_format="JPEG")
    return root


def write_sunrgbd_lists(root, counts=None, raw_ids=SUNRGBD_IDS, size=SIZE, seed=0, columns=3):
    """SUN RGB-D, list form (chrischoy/SUN_RGBD): ``{split}37.txt`` pairs differently named files.

    Images are ``image/{split}/img-{i:06d}.jpg``, labels
    ``label37/{split}/{i:08d}.png``, depth ``depth/{split}/{i:08d}.png``; each
    line is ``image depth label`` (`columns=3`) or ``image label`` (2).
    """
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (counts or {"train": 4, "test": 2}).items():
        lines = []
        for i in range(1, count + 1):
            image = f"image/{split}/img-{i:06d}.jpg"
            depth = f"depth/{split}/{i:08d}.png"
            label = f"label37/{split}/{i:08d}.png"
            write_pair(root / image, root / label, rng, raw_ids, size, image_format="JPEG")
            (root / depth).parent.mkdir(parents=True, exist_ok=True)
            Image.new("I;16", size[::-1]).save(root / depth)
            lines.append(f"{image} {depth} {label}" if columns == 3 else f"{image} {label}")
        (root / layouts.SUNRGBD_LIST_FILE.format(split=split)).write_text("\n".join(lines) + "\n")
    return root
