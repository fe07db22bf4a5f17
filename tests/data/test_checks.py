"""Tests for usss_tf.data.checks: each broken-file case is found and named, at the right depth."""

import pathlib

import numpy as np
import pytest
from PIL import Image

import dataset_trees
from usss_tf.data import checks, readers
from usss_tf.errors import DatasetError


def _write_image(path, value, size=(8, 6), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    shape = {"RGB": (height, width, 3), "L": (height, width)}[mode]
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode).save(path)
    return path


def _example(tmp_path, image_size=(8, 6), label_size=(8, 6), value=3):
    image = _write_image(tmp_path / "img.png", value, size=image_size)
    label = _write_image(tmp_path / "lab.png", value, size=label_size, mode="L")
    return readers.Example("img", str(image), str(label))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_noise(path, size=(64, 48), mode="RGB"):
    # Noise compresses badly, so half the file cuts into the pixel data.
    width, height = size
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


# -- check_example: the full check of one example ------------------------------------


def test_check_example_accepts_good_files(tmp_path):
    checks.check_example(_example(tmp_path), "camvid")
    # An unlabelled example is fine too.
    checks.check_example(readers.Example("x", str(tmp_path / "img.png"), None))


def test_check_example_rejects_labels_the_pipeline_would_misread(tmp_path):
    # decode_png(channels=1) turns palette indices into luminance and 16-bit into 0.
    _example(tmp_path)
    label16 = tmp_path / "lab16.png"
    Image.fromarray(np.full((6, 8), 300, dtype=np.uint16)).save(label16)
    with pytest.raises(DatasetError, match="lab16.png.*mode L"):
        checks.check_example(readers.Example("x", str(tmp_path / "img.png"), str(label16)))


@pytest.mark.parametrize("broken", ["image", "label"])
def test_check_example_reports_truncated_png(tmp_path, broken):
    example = _example(tmp_path, image_size=(64, 48), label_size=(64, 48))
    path = tmp_path / ("img.png" if broken == "image" else "lab.png")
    _write_noise(path, mode="RGB" if broken == "image" else "L")
    _truncate(path)
    with pytest.raises(DatasetError, match=f"cannot decode {path}"):
        checks.check_example(example, "camvid")


def test_check_example_reports_size_mismatch(tmp_path):
    example = _example(tmp_path, image_size=(8, 6), label_size=(8, 5))
    with pytest.raises(DatasetError) as error:
        checks.check_example(example, "cityscapes")
    message = str(error.value)
    assert "sizes differ" in message and "domain 'cityscapes'" in message
    assert f"{example.image} is 8x6" in message and f"{example.label} is 8x5" in message


def test_check_example_requires_single_channel_label(tmp_path):
    example = _example(tmp_path)
    _write_image(tmp_path / "lab.png", 3, mode="RGB")
    with pytest.raises(DatasetError, match=f"label {example.label} .*mode 'RGB'"):
        checks.check_example(example)


def test_check_example_rejects_float_image(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.zeros((6, 8), dtype=np.float32)).save(path)
    with pytest.raises(DatasetError, match="mode 'F', which does not convert to 8-bit RGB"):
        checks.check_example(readers.Example("depth", str(path), None))


@pytest.mark.parametrize(
    "domain, good, bad, shown, known",
    [
        ("cityscapes", [0, 7, 33, 255], [34, 35, 200], "34-35, 200", "0-33, 255"),
        ("camvid", [0, 10, 11], [12], "12", "0-11, 255"),
        ("idd", [0, 25, 255], [26, 30], "26, 30", "0-25, 255"),
        ("sunrgbd", [0, 1, 37], [38], "38", "0-37, 255"),
    ],
)
def test_check_example_label_ids_outside_the_domain(tmp_path, domain, good, bad, shown, known):
    example = _example(tmp_path, image_size=(16, 8), label_size=(16, 8))
    label = np.zeros((8, 16), np.uint8)
    label.flat[: len(good)] = good
    Image.fromarray(label).save(example.label)
    checks.check_example(example, domain)  # void ids and 255 are fine
    label.flat[-len(bad):] = bad
    Image.fromarray(label).save(example.label)
    with pytest.raises(DatasetError) as error:
        checks.check_example(example, domain)
    message = str(error.value)
    assert f"label {example.label} holds raw ids {shown} that domain '{domain}'" in message
    assert f"(its ids: {known})" in message
    checks.check_example(example)  # without a domain, ids are not checked


# -- find_broken: many examples, at header or full depth --------------------------------


def _tree(tmp_path):
    """Six good Cityscapes examples of one city; returns (root, examples)."""
    root = dataset_trees.write_cityscapes_tree(tmp_path / "c", cities={"train": {"ulm": 6}})
    return root, readers.list_examples("cityscapes", root, "train", require_labels=False)


def _listed(root):
    return readers.list_examples("cityscapes", root, "train", require_labels=False)


def test_find_broken_names_each_case_at_header_depth(tmp_path):
    root, examples = _tree(tmp_path)
    assert checks.find_broken(examples, "cityscapes", "train") == []
    missing = pathlib.Path(examples[1].label)
    missing.unlink()
    _write_image(pathlib.Path(examples[2].label), 7, size=(64, 31), mode="L")
    pathlib.Path(examples[3].image).write_bytes(b"not a png")
    examples = _listed(root)
    broken = checks.find_broken(examples, "cityscapes", "train")
    assert [(b.key, b.file) for b in broken] == [
        ("ulm/ulm_000001_000020", examples[1].image),
        ("ulm/ulm_000002_000021", examples[2].label),
        ("ulm/ulm_000003_000022", examples[3].image),
    ]
    assert broken[0].reason.endswith(f"has no label: expected {missing}")
    assert "sizes differ" in broken[1].reason and "is 64x31" in broken[1].reason
    assert broken[2].reason.startswith(f"cannot read {examples[3].image}")
    assert broken[0].to_json() == {
        "split": "train", "key": "ulm/ulm_000001_000020", "file": examples[1].image,
        "reason": broken[0].reason,
    }
    # Images without labels are fine where labels are not needed.
    assert [b.key for b in checks.find_broken(examples, "cityscapes", "x", need_labels=False)] == [
        "ulm/ulm_000002_000021", "ulm/ulm_000003_000022",
    ]


def test_pixel_faults_need_full_depth(tmp_path):
    root, examples = _tree(tmp_path)
    label = np.asarray(Image.open(examples[0].label)).copy()
    label[0, 0] = 99
    Image.fromarray(label).save(examples[0].label)
    truncated = _write_noise(pathlib.Path(examples[1].image), size=(64, 32))
    _truncate(truncated)
    # Both headers are intact: header depth finds neither.
    assert checks.find_broken(examples, "cityscapes", "train") == []
    broken = checks.find_broken(examples, "cityscapes", "train", decode_labels=True)
    assert [b.file for b in broken] == [examples[0].label]
    assert "holds raw ids 99" in broken[0].reason
    broken = checks.find_broken(
        examples, "cityscapes", "train", decode_images=True, decode_labels=True
    )
    assert [b.file for b in broken] == [examples[0].label, str(truncated)]
    assert broken[1].reason.startswith(f"cannot decode {truncated}")


def test_broken_list_file_example_names_its_line(tmp_path):
    root = dataset_trees.write_sunrgbd_lists(tmp_path / "sun", counts={"train": 2})
    (root / "image" / "train" / "img-000002.jpg").unlink()
    examples = readers.list_examples("sunrgbd", root, "train", require_labels=False)
    (broken,) = checks.find_broken(examples, "sunrgbd", "train")
    image, list_file = root / "image/train/img-000002.jpg", root / "train37.txt"
    assert broken.reason == f"file not found: {image} (listed at {list_file}:2)"


def test_describe_limits_the_listing():
    broken = [checks.Broken("train", str(i), f"f{i}", f"reason {i}") for i in range(7)]
    assert checks.describe(broken, limit=2) == "reason 0; reason 1; and 5 more"


def test_find_unreadable_names_each_bad_file(tmp_path):
    good = _write_image(tmp_path / "good.png", 1)
    corrupt = _write_noise(tmp_path / "corrupt.png")
    _truncate(corrupt)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    missing = tmp_path / "missing.png"
    paths = [good, str(corrupt), bytes(not_an_image), str(missing)]
    found = checks.find_unreadable(paths)
    assert [path for path, _ in found] == [str(corrupt), str(not_an_image), str(missing)]
    reasons = dict(found)
    assert str(corrupt) in reasons[str(corrupt)]
    assert reasons[str(missing)] == f"file not found: {missing}"
    assert checks.find_unreadable([good]) == []
