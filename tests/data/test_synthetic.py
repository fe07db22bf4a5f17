"""Tests for usss_tf.data.synthetic: the built-in synthetic domains."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from usss_tf import domains
from usss_tf.data import checks, readers, synthetic
from usss_tf.data.synthetic import write as synthetic_write
from usss_tf.errors import ConfigError, DatasetError, UnknownDomainError

SMALL = dict(num_train=3, num_val=1, size=(48, 96))


def _files(root):
    """{relative path: bytes} of every file under `root`."""
    return {
        os.path.relpath(os.path.join(folder, name), root): open(
            os.path.join(folder, name), "rb"
        ).read()
        for folder, _, names in os.walk(root)
        for name in names
    }


def _labels(domain_name, root, split="train"):
    examples = readers.list_examples(domain_name, root, split)
    return [np.asarray(Image.open(e.label)) for e in examples]


@pytest.fixture(scope="module")
def twenty(tmp_path_factory):
    """20 training images of each synthetic domain at the default size."""
    out = tmp_path_factory.mktemp("synthetic")
    return synthetic.write_synthetic_domains(out, num_train=20, num_val=2, seed=0)


def test_writes_each_domain_in_its_layout(twenty):
    assert list(twenty) == list(synthetic.SYNTHETIC_DOMAINS)
    city = twenty["synth_city"]
    assert city.name == "synth_city"
    assert (city / "leftImg8bit" / "train").is_dir() and (city / "gtFine" / "val").is_dir()
    camvid = twenty["synth_camvid"]
    for folder in ("train", "trainannot", "val", "valannot"):
        assert (camvid / folder).is_dir()
    for name, root in twenty.items():
        train = readers.list_examples(name, root, "train")
        val = readers.list_examples(name, root, "val")
        assert (len(train), len(val)) == (20, 2)
        for example in train[:2] + val:
            checks.check_example(example, name)
            image = np.asarray(Image.open(example.image))
            label = np.asarray(Image.open(example.label))
            assert image.shape == (128, 256, 3) and image.dtype == np.uint8
            assert label.shape == (128, 256) and label.dtype == np.uint8
    # Cityscapes naming: train and val come from different cities.
    keys = [e.key for e in readers.list_examples("synth_city", city, "train")]
    assert {k.split("/")[0] for k in keys} == {"synthberg", "synthdorf"}
    assert readers.list_examples("synth_city", city, "val")[0].key.startswith("synthhausen/")


def test_marker_file_describes_the_data(twenty):
    marker = json.loads((twenty["synth_camvid"] / synthetic.MARKER_FILE).read_text())
    assert marker == {
        "domain": "synth_camvid",
        "layout": "camvid",
        "seed": 0,
        "counts": {"train": 20, "val": 2},
        "size": [128, 256],
        "generator_version": synthetic.GENERATOR_VERSION,
    }


@pytest.mark.parametrize("name", synthetic.SYNTHETIC_DOMAINS)
def test_raw_ids_are_known_and_every_class_appears(twenty, name):
    domain = domains.get_domain(name)
    table = domain.lookup_table()
    known_raw = {raw for raw, _ in domain.raw_to_train}
    void = {"synth_city": {1}, "synth_camvid": {domains.SYNTH_CAMVID_VOID},
            "synth_idd": {domains.SYNTH_IDD_VOID}}[name]
    seen = set()
    for label in _labels(name, twenty[name]):
        raw_ids = set(np.unique(label).tolist())
        assert raw_ids <= known_raw | void, raw_ids - known_raw - void
        train_ids = table[label]
        assert np.all((train_ids < domain.num_classes) | (train_ids == 255))
        seen |= set(np.unique(train_ids).tolist())
    assert seen - {255} == set(range(domain.num_classes)), [
        domain.class_names[i] for i in set(range(domain.num_classes)) - seen
    ]
    # Both domains have pixels outside their label space (ego hood; fence, pole).
    assert 255 in seen


def test_domains_look_different(twenty):
    """Cool daylight vs warm evening: the blue-red balance flips."""

    def blue_minus_red(name):
        examples = readers.list_examples(name, twenty[name], "train")
        pixels = np.stack([np.asarray(Image.open(e.image), np.float32) for e in examples])
        return pixels[..., 2].mean() - pixels[..., 0].mean()

    assert blue_minus_red("synth_city") > 5
    assert blue_minus_red("synth_camvid") < -5


def test_same_seed_is_byte_identical(tmp_path):
    first = synthetic.write_synthetic_domains(tmp_path / "a", seed=5, **SMALL)
    second = synthetic.write_synthetic_domains(tmp_path / "b", seed=5, **SMALL)
    for name in synthetic.SYNTHETIC_DOMAINS:
        files = _files(first[name])
        assert len(files) == 2 * 4 + 1
        assert files == _files(second[name])


def test_different_seed_differs(tmp_path):
    first = synthetic.write_synthetic_domain("synth_city", tmp_path / "a", seed=1, **SMALL)
    second = synthetic.write_synthetic_domain("synth_city", tmp_path / "b", seed=2, **SMALL)
    a, b = _files(first), _files(second)
    assert a.keys() == b.keys()
    images = [k for k in a if "leftImg8bit" in k]
    assert all(a[k] != b[k] for k in images)


def test_more_images_keep_the_earlier_ones(tmp_path):
    few = synthetic.write_synthetic_domain(
        "synth_camvid", tmp_path / "few", num_train=2, num_val=1, size=(48, 96)
    )
    more = synthetic.write_synthetic_domain(
        "synth_camvid", tmp_path / "more", num_train=3, num_val=1, size=(48, 96)
    )
    few_files, more_files = _files(few), _files(more)
    for path, data in few_files.items():
        if path != synthetic.MARKER_FILE:
            assert more_files[path] == data, path
    assert len(more_files) == len(few_files) + 2


def test_render_scene_contract():
    image, label = synthetic.render_scene("synth_city", 7, size=(40, 72))
    assert image.shape == (40, 72, 3) and image.dtype == np.uint8
    assert label.shape == (40, 72) and label.dtype == np.uint8
    again, _ = synthetic.render_scene("synth_city", np.random.default_rng(7), size=(40, 72))
    np.testing.assert_array_equal(image, again)
    with pytest.raises(UnknownDomainError, match="synthetic domains: synth_city, synth_camvid"):
        synthetic.render_scene("cityscapes", 0)
    with pytest.raises(ConfigError, match="at least 32x32"):
        synthetic.render_scene("synth_city", 0, size=(16, 64))


def test_existing_output_is_reused_untouched(tmp_path):
    root = synthetic.write_synthetic_domain("synth_city", tmp_path / "city", **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert synthetic.write_synthetic_domain("synth_city", tmp_path / "city", **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps


def test_output_has_ordinary_permissions(tmp_path):
    root = synthetic.write_synthetic_domain("synth_city", tmp_path / "city", **SMALL)
    reference = tmp_path / "reference"
    reference.mkdir()  # what the umask gives a plain folder (not mkdtemp's 0700)
    assert root.stat().st_mode == reference.stat().st_mode


def test_changed_settings_regenerate(tmp_path):
    root = synthetic.write_synthetic_domain("synth_camvid", tmp_path / "camvid", **SMALL)
    synthetic.write_synthetic_domain("synth_camvid", root, num_train=4, num_val=1, size=(48, 96))
    assert len(readers.list_examples("synth_camvid", root, "train")) == 4
    assert json.loads((root / synthetic.MARKER_FILE).read_text())["counts"]["train"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camvid"]  # nothing left behind


def test_missing_files_regenerate(tmp_path):
    root = synthetic.write_synthetic_domain("synth_camvid", tmp_path / "camvid", **SMALL)
    (root / "train" / "synth_00001.png").unlink()
    synthetic.write_synthetic_domain("synth_camvid", root, **SMALL)
    assert (root / "train" / "synth_00001.png").is_file()


def test_refuses_to_clobber_foreign_folder(tmp_path):
    foreign = tmp_path / "synth_city"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetError, match=f"{foreign} exists but has no synthetic.json"):
        synthetic.write_synthetic_domains(tmp_path, domains=("synth_city",), **SMALL)
    assert (foreign / "mine.txt").read_text() == "keep me"


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    render = synthetic.render_scene

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return render(*args, **kwargs)

    monkeypatch.setattr(synthetic_write, "render_scene", failing_render)  # The writer's renderer.
    with pytest.raises(RuntimeError, match="disk on fire"):
        synthetic.write_synthetic_domain("synth_city", tmp_path / "city", **SMALL)
    assert list(tmp_path.iterdir()) == []  # no target, no temporary sibling


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(UnknownDomainError, match="unknown synthetic domain 'camvid'"):
        synthetic.write_synthetic_domain("camvid", tmp_path / "x")
    with pytest.raises(ConfigError, match="num_train >= 1"):
        synthetic.write_synthetic_domain("synth_city", tmp_path / "x", num_train=0)
    with pytest.raises(ConfigError, match="seed must be an int"):
        synthetic.write_synthetic_domain("synth_city", tmp_path / "x", seed=1.5)
    assert not (tmp_path / "x").exists()
