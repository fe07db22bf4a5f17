"""Tests for usss_tf.data.readers on small dataset trees written in tmp_path.

Every image and its label carry the same pixel value, so a test can tell from
the files' content whether the reader paired them correctly.
"""

import random

import numpy as np
import pytest
from PIL import Image

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
# check_example / find_unreadable
# ---------------------------------------------------------------------------


def _example(tmp_path, image_size=(8, 6), label_size=(8, 6)):
    image = _write_image(tmp_path / "img.png", 3, size=image_size)
    label = _write_image(tmp_path / "lab.png", 3, size=label_size, mode="L")
    return readers.Example("img", str(image), str(label))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_check_example_accepts_good_files(tmp_path):
    readers.check_example(_example(tmp_path), "camvid")
    # An unlabelled example is fine too.
    readers.check_example(readers.Example("x", str(tmp_path / "img.png"), None))


def test_check_example_rejects_labels_the_pipeline_would_misread(tmp_path):
    # decode_png(channels=1) turns palette indices into luminance and 16-bit into 0.
    _example(tmp_path)
    label16 = tmp_path / "lab16.png"
    Image.fromarray(np.full((6, 8), 300, dtype=np.uint16)).save(label16)
    with pytest.raises(DatasetError, match="lab16.png.*mode L"):
        readers.check_example(readers.Example("x", str(tmp_path / "img.png"), str(label16)))


def _write_noise(path, size=(64, 48)):
    # Noise compresses badly, so half the file cuts into the pixel data.
    width, height = size
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("broken", ["image", "label"])
def test_check_example_reports_truncated_png(tmp_path, broken):
    example = _example(tmp_path, image_size=(64, 48), label_size=(64, 48))
    path = tmp_path / ("img.png" if broken == "image" else "lab.png")
    _write_noise(path)
    if broken == "label":
        Image.open(path).convert("L").save(path)
    _truncate(path)
    with pytest.raises(DatasetError, match=f"cannot decode {path}"):
        readers.check_example(example, "camvid")


def test_check_example_reports_size_mismatch(tmp_path):
    example = _example(tmp_path, image_size=(8, 6), label_size=(8, 5))
    with pytest.raises(DatasetError) as error:
        readers.check_example(example, "cityscapes")
    message = str(error.value)
    assert "sizes differ" in message and "domain 'cityscapes'" in message
    assert f"{example.image} is 8x6" in message and f"{example.label} is 8x5" in message


def test_check_example_requires_single_channel_label(tmp_path):
    example = _example(tmp_path)
    _write_image(tmp_path / "lab.png", 3, mode="RGB")
    with pytest.raises(DatasetError, match=f"label {example.label} .*mode 'RGB'"):
        readers.check_example(example)


def test_check_example_rejects_float_image(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.zeros((6, 8), dtype=np.float32)).save(path)
    with pytest.raises(DatasetError, match="mode 'F', which does not convert to 8-bit RGB"):
        readers.check_example(readers.Example("depth", str(path), None))


def test_find_unreadable_names_each_bad_file(tmp_path):
    good = _write_image(tmp_path / "good.png", 1)
    corrupt = _write_noise(tmp_path / "corrupt.png")
    _truncate(corrupt)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    missing = tmp_path / "missing.png"
    paths = [good, str(corrupt), bytes(not_an_image), str(missing)]
    found = readers.find_unreadable(paths)
    assert [path for path, _ in found] == [str(corrupt), str(not_an_image), str(missing)]
    reasons = dict(found)
    assert str(corrupt) in reasons[str(corrupt)]
    assert reasons[str(missing)] == f"file not found: {missing}"
    assert readers.find_unreadable([good]) == []
