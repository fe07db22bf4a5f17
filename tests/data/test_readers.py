"""Tests for usss_tf.data.readers on small dataset trees written in tmp_path.

Every image and its label carry the same pixel value, so a test can tell from
the files' content whether the reader paired them correctly. The trees here
spell each dataset's paths out literally (as the datasets' own documentation
does), so they check ``usss_tf.data.layouts`` against the real conventions.
"""

import random

import numpy as np
import pytest
from PIL import Image

import dataset_trees
from usss_tf import domains
from usss_tf.data import readers
from usss_tf.errors import ConfigError, DatasetError


def _write_image(path, value, size=(8, 6), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    channels = {"RGB": (height, width, 3), "L": (height, width)}[mode]
    Image.fromarray(np.full(channels, value, dtype=np.uint8), mode).save(path, format=fmt)
    return path


def _write_pair(image_path, label_path, value, **kwargs):
    _write_image(image_path, value, **kwargs)
    _write_image(label_path, value, mode="L", size=kwargs.get("size", (8, 6)))


def _assert_paired_by_content(examples):
    for example in examples:
        image_value = np.asarray(Image.open(example.image))[0, 0, 0]
        label_value = np.asarray(Image.open(example.label))[0, 0]
        assert image_value == label_value, example


def _shuffled(items, seed=0):
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


def _cityscapes_tree(root, split="train"):
    names = [("zurich", 3), ("aachen", 7), ("aachen", 1), ("bremen", 2), ("zurich", 0)]
    for value, (city, frame) in _shuffled(enumerate(names, start=1)):
        stem = f"{city}_000000_{frame:06d}"
        _write_pair(
            root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
            value * 10,
        )
    # Files the reader must skip: other label kinds and hidden files.
    _write_image(root / "gtFine" / split / "aachen" / "aachen_000000_000007_gtFine_color.png", 0)
    _write_image(root / "leftImg8bit" / split / "aachen" / ".hidden_leftImg8bit.png", 0)
    return root


def test_cityscapes_sorted_and_paired_by_name(tmp_path):
    root = _cityscapes_tree(tmp_path / "cityscapes")
    examples = readers.list_examples("cityscapes", root, "train")
    assert [e.key for e in examples] == [
        "aachen/aachen_000000_000001",
        "aachen/aachen_000000_000007",
        "bremen/bremen_000000_000002",
        "zurich/zurich_000000_000000",
        "zurich/zurich_000000_000003",
    ]
    _assert_paired_by_content(examples)
    first = examples[0]
    assert first.image.endswith("leftImg8bit/train/aachen/aachen_000000_000001_leftImg8bit.png")
    assert first.label.endswith("gtFine/train/aachen/aachen_000000_000001_gtFine_labelIds.png")
    assert first.image.startswith(str(tmp_path))


def test_relative_root_gives_absolute_paths(tmp_path, monkeypatch):
    _cityscapes_tree(tmp_path / "cityscapes")
    monkeypatch.chdir(tmp_path)
    examples = readers.list_examples(domains.get_domain("cityscapes"), "cityscapes", "train")
    assert all(e.image.startswith("/") and e.label.startswith("/") for e in examples)


def test_idd_accepts_png_and_jpg(tmp_path):
    root = tmp_path / "idd"
    for value, (seq, frame, fmt) in enumerate([("0", "000123", "JPEG"), ("1", "000005", "PNG")], 1):
        suffix = ".jpg" if fmt == "JPEG" else ".png"
        _write_pair(
            root / "leftImg8bit" / "val" / seq / f"{frame}_leftImg8bit{suffix}",
            root / "gtFine" / "val" / seq / f"{frame}_gtFine_labellevel3Ids.png",
            value * 50,
            fmt=fmt,
        )
    examples = readers.list_examples("idd", root, "val")
    assert [e.key for e in examples] == ["0/000123", "1/000005"]
    assert examples[0].image.endswith(".jpg") and examples[1].image.endswith(".png")
    assert all(e.label.endswith("_gtFine_labellevel3Ids.png") for e in examples)


def test_idd_same_stem_twice_is_an_error(tmp_path):
    folder = tmp_path / "idd" / "leftImg8bit" / "train" / "0"
    _write_image(folder / "000001_leftImg8bit.png", 1)
    _write_image(folder / "000001_leftImg8bit.jpg", 1, fmt="JPEG")
    with pytest.raises(DatasetError, match="two images with the same name"):
        readers.list_examples("idd", tmp_path / "idd", "train", require_labels=False)


def _camvid_tree(root, names=("0001TP_006690", "0006R0_f01200", "Seq05VD_f00030")):
    for value, name in _shuffled(enumerate(names, start=1), seed=3):
        _write_pair(root / "train" / f"{name}.png", root / "trainannot" / f"{name}.png", value)
    return root


def test_camvid_pairs_by_name(tmp_path):
    root = _camvid_tree(tmp_path / "camvid")
    examples = readers.list_examples("camvid", root, "train")
    assert [e.key for e in examples] == ["0001TP_006690", "0006R0_f01200", "Seq05VD_f00030"]
    _assert_paired_by_content(examples)


def test_missing_label_names_the_image_and_expected_path(tmp_path):
    root = _camvid_tree(tmp_path / "camvid")
    (root / "trainannot" / "0006R0_f01200.png").unlink()
    with pytest.raises(DatasetError) as error:
        readers.list_examples("camvid", root, "train")
    message = str(error.value)
    assert str(root / "train" / "0006R0_f01200.png") in message
    assert str(root / "trainannot" / "0006R0_f01200.png") in message
    # Unlabelled reading keeps the image, without a label.
    examples = readers.list_examples("camvid", root, "train", require_labels=False)
    assert [e.label is None for e in examples] == [False, True, False]


def test_unlabelled_split_without_label_folder(tmp_path):
    root = tmp_path / "camvid"
    _write_image(root / "test" / "a.png", 1)
    examples = readers.list_examples("camvid", root, "test", require_labels=False)
    assert examples == [readers.Example("a", str(root / "test" / "a.png"), None)]
    with pytest.raises(DatasetError, match="labels of split 'test' not found: expected folder"):
        readers.list_examples("camvid", root, "test")


def test_sunrgbd_layout(tmp_path):
    root = tmp_path / "sun"
    for value, name in _shuffled(enumerate(["img-000002", "img-000001", "img-000010"], 1)):
        _write_pair(
            root / "train" / "image" / f"{name}.jpg",
            root / "train" / "label37" / f"{name}.png",
            value * 40,
            fmt="JPEG",
        )
    examples = readers.list_examples("sunrgbd", root, "train")
    assert [e.key for e in examples] == ["img-000001", "img-000002", "img-000010"]
    assert all("/train/label37/" in e.label for e in examples)


def test_missing_root_names_the_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=f"domain 'cityscapes' not found: {missing}$"):
        readers.list_examples("cityscapes", missing, "train")


def test_missing_split_names_the_expected_folder(tmp_path):
    root = _cityscapes_tree(tmp_path / "cityscapes")
    with pytest.raises(DatasetError) as error:
        readers.list_examples("cityscapes", root, "val")
    assert f"expected folder {root / 'leftImg8bit' / 'val'}" in str(error.value)


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "camvid" / "val").mkdir(parents=True)
    (tmp_path / "camvid" / "valannot").mkdir()
    with pytest.raises(DatasetError, match=f"no images found in {tmp_path / 'camvid' / 'val'}"):
        readers.list_examples("camvid", tmp_path / "camvid", "val")


def test_bad_split_and_unknown_layout(tmp_path):
    with pytest.raises(ConfigError, match="split must be a plain folder name"):
        readers.list_examples("camvid", tmp_path, "../train")
    strange = domains.Domain("strange", "voc", ("a",), ((0, 0, 0),), ((1, 0),))
    with pytest.raises(ConfigError, match="layout 'voc', which has no reader; known layouts: "):
        readers.list_examples(strange, tmp_path, "train")


def test_register_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_LAYOUT_READERS", dict(readers._LAYOUT_READERS))

    def list_flat(root, split, *, require_labels):
        return [readers.Example(p.stem, str(p), None) for p in sorted((root / split).glob("*.png"))]

    readers.register_layout("flat", list_flat)
    _write_image(tmp_path / "train" / "x.png", 1)
    flat = domains.Domain("flat_domain", "flat", ("a",), ((0, 0, 0),), ((1, 0),))
    assert [e.key for e in readers.list_examples(flat, tmp_path, "train")] == ["x"]
    assert "flat" in readers.supported_layouts()
    with pytest.raises(ConfigError, match="already has a reader"):
        readers.register_layout("camvid", list_flat)


# ---------------------------------------------------------------------------
# Each reader on a tree in its dataset's real layout (tests/data/dataset_trees.py).
# ---------------------------------------------------------------------------


def test_cityscapes_layout_tree(tmp_path):
    root = dataset_trees.write_cityscapes_tree(tmp_path / "cityscapes")
    train = readers.list_examples("cityscapes", root, "train")
    val = readers.list_examples("cityscapes", root, "val")
    assert [e.key for e in train] == [
        "aachen/aachen_000000_000019", "aachen/aachen_000001_000020",
        "aachen/aachen_000002_000021", "bremen/bremen_000000_000019",
        "bremen/bremen_000001_000020",
    ]  # fmt: skip
    assert [e.key.split("/")[0] for e in val] == ["frankfurt", "frankfurt"]
    # Paired by name: the colour labels and polygons next to them are ignored.
    assert all(e.label.endswith("_gtFine_labelIds.png") for e in train + val)
    assert all(dataset_trees.red_matches_label(e) for e in train + val)


def test_idd_layout_tree(tmp_path):
    root = dataset_trees.write_idd_tree(tmp_path / "idd")
    train = readers.list_examples("idd", root, "train")
    assert [e.key for e in train] == ["0/000000", "0/000001", "103/103000", "103/103001"]
    assert all(e.label.endswith("_gtFine_labellevel3Ids.png") for e in train)
    assert all(dataset_trees.red_matches_label(e) for e in train)
    assert len(readers.list_examples("idd", root, "val")) == 2


def test_camvid_layout_tree(camvid_tree):
    train = readers.list_examples("camvid", camvid_tree, "train")
    assert len(train) == 8 and train[0].label.endswith("/trainannot/frame000.png")
    assert len(readers.list_examples("camvid", camvid_tree, "val")) == 3


def test_sunrgbd_folder_layout_tree(tmp_path):
    root = dataset_trees.write_sunrgbd_folders(tmp_path / "sun")
    train = readers.list_examples("sunrgbd", root, "train")
    assert [e.key for e in train] == [f"img-{i:06d}" for i in range(1, 5)]
    assert all(dataset_trees.red_matches_label(e) for e in train)
    assert len(readers.list_examples("sunrgbd", root, "test")) == 2


@pytest.mark.parametrize("columns", [2, 3])
def test_sunrgbd_list_file_pairs_differently_named_files(tmp_path, columns):
    root = dataset_trees.write_sunrgbd_lists(tmp_path / "sun", columns=columns)
    train = readers.list_examples("sunrgbd", root, "train")
    assert [e.key for e in train] == [f"image/train/img-{i:06d}" for i in range(1, 5)]
    assert train[0].label == str(root / "label37" / "train" / "00000001.png")
    assert train[0].origin == f"{root / 'train37.txt'}:1"
    assert all(dataset_trees.red_matches_label(e) for e in train)
    assert len(readers.list_examples("sunrgbd", root, "test")) == 2


def test_sunrgbd_list_file_details(tmp_path):
    root = dataset_trees.write_sunrgbd_lists(tmp_path / "sun", counts={"train": 3})
    # chrischoy/SUN_RGBD's top-level lists give the label as a bare file name;
    # comments, blank lines, CRLF and absolute paths are accepted.
    (root / "train37.txt").write_text(
        "# image depth label\r\n"
        "image/train/img-000002.jpg depth/train/00000002.png 00000002.png\r\n"
        "\n"
        f"{root}/image/train/img-000001.jpg {root}/label37/train/00000001.png\n"
    )
    examples = readers.list_examples("sunrgbd", root, "train")
    assert [(e.key, e.origin.rsplit(":", 1)[1]) for e in examples] == [
        ("image/train/img-000001", "4"), ("image/train/img-000002", "2"),
    ]
    assert examples[1].label == str(root / "label37" / "train" / "00000002.png")
    assert all(dataset_trees.red_matches_label(e) for e in examples)


def test_sunrgbd_list_file_wins_over_folders(tmp_path):
    root = dataset_trees.write_sunrgbd_folders(tmp_path / "sun", counts={"train": 3})
    dataset_trees.write_sunrgbd_lists(root, counts={"train": 2})
    assert len(readers.list_examples("sunrgbd", root, "train")) == 2


def test_sunrgbd_list_file_errors_name_the_line(tmp_path):
    root = dataset_trees.write_sunrgbd_lists(tmp_path / "sun", counts={"train": 3})
    list_file = root / "train37.txt"
    lines = list_file.read_text().splitlines()
    (root / "label37" / "train" / "00000002.png").unlink()
    with pytest.raises(DatasetError, match=rf"{list_file}:2: label not found: .*00000002.png"):
        readers.list_examples("sunrgbd", root, "train")
    # Unlabelled reading keeps it, without a label, and says where it was listed.
    lenient = readers.list_examples("sunrgbd", root, "train", require_labels=False)
    assert lenient[1].label is None and lenient[1].origin == f"{list_file}:2"
    assert lenient[1].missing_label.endswith("label37/train/00000002.png")

    (root / "image" / "train" / "img-000003.jpg").unlink()
    with pytest.raises(DatasetError, match=rf"{list_file}:2: label not found"):
        readers.list_examples("sunrgbd", root, "train")
    list_file.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(DatasetError, match=rf"{list_file}:2: image not found: .*img-000003.jpg"):
        readers.list_examples("sunrgbd", root, "train")
    list_file.write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(DatasetError, match=rf"{list_file}:2: image .* already listed on line 1"):
        readers.list_examples("sunrgbd", root, "train")
    list_file.write_text("image/train/img-000001.jpg\n")
    with pytest.raises(DatasetError, match=rf"{list_file}:1: expected 'image label' or"):
        readers.list_examples("sunrgbd", root, "train")
    list_file.write_text("# nothing\n")
    with pytest.raises(DatasetError, match=f"no examples listed in {list_file}"):
        readers.list_examples("sunrgbd", root, "train")


def test_missing_label_is_recorded_when_not_required(tmp_path):
    root = dataset_trees.write_cityscapes_tree(tmp_path / "c", cities={"train": {"ulm": 2}})
    label = root / "gtFine" / "train" / "ulm" / "ulm_000001_000020_gtFine_labelIds.png"
    label.unlink()
    examples = readers.list_examples("cityscapes", root, "train", require_labels=False)
    assert examples[1].label is None and examples[1].missing_label == str(label)
    # missing_label and origin do not take part in equality.
    assert examples[1] == readers.Example(examples[1].key, examples[1].image, None)
