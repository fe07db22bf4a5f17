"""Tests for usss_tf.data.sources: broken datasets under ``data.on_broken`` stop and skip.

Each case breaks one example of a tiny CamVid tree (8 train, 3 val images) in
one way the issue lists — a missing label, a label of the wrong size, a raw id
outside the domain, an unreadable file — in the labelled subset, the
unlabelled pool or the validation split. Under ``stop`` the run's data
preparation fails naming the file; under ``skip`` it leaves that example out,
and the manifest counts and names it.
"""

import json

import numpy as np
import pytest
from PIL import Image

import dataset_trees
from conftest import write_camvid_tree
from usss_tf import config as config_lib
from usss_tf.data import pipeline, readers, sources
from usss_tf.errors import ConfigError, DatasetError

LABELED = 3


def _config(root, on_broken="stop", labeled=LABELED, name="camvid", **domain):
    return config_lib.config_from_dict({
        "domains": [{"name": name, "root": str(root), "labeled": labeled, **domain}],
        "data": {"crop": [32, 64], "on_broken": on_broken},
    })


def _drawn_and_pool(root):
    """Keys of the labelled draw and of the unlabelled pool on the intact tree."""
    train = readers.list_examples("camvid", root, "train")
    labeled, unlabeled = pipeline.split_labeled(train, LABELED, 0, "camvid")
    return [e.key for e in labeled], [e.key for e in unlabeled]


def _truncate_keeping_header(path, mode):
    """Rewrites `path` as noise of the same size, then cuts it: the header still reads."""
    with Image.open(path) as image:
        width, height = image.size
    pixels = np.random.default_rng(0).integers(0, 7, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _set_raw_id(path, raw_id):
    label = np.asarray(Image.open(path)).copy()
    label[0, :4] = raw_id
    Image.fromarray(label).save(path)


# Each case breaks the tree and returns (split, key, file at fault, words of the reason).
def _missing_label(root, drawn, pool):
    (root / "trainannot" / f"{pool[0]}.png").unlink()
    return "train", pool[0], root / "train" / f"{pool[0]}.png", "has no label: expected"


def _label_wrong_size(root, drawn, pool):
    path = root / "trainannot" / f"{drawn[0]}.png"
    Image.fromarray(np.zeros((31, 64), np.uint8)).save(path)
    return "train", drawn[0], path, "sizes differ"


def _id_outside_map_labelled(root, drawn, pool):
    path = root / "trainannot" / f"{drawn[1]}.png"
    _set_raw_id(path, 40)
    return "train", drawn[1], path, "holds raw ids 40 that domain 'camvid' does not define"


def _label_truncated_labelled(root, drawn, pool):
    path = root / "trainannot" / f"{drawn[2]}.png"
    _truncate_keeping_header(path, "L")
    return "train", drawn[2], path, "cannot decode"


def _unreadable_unlabelled_image(root, drawn, pool):
    path = root / "train" / f"{pool[1]}.png"
    path.write_bytes(b"\x89PNG but not really")
    return "train", pool[1], path, "cannot read"


def _id_outside_map_val(root, drawn, pool):
    path = root / "valannot" / "frame001.png"
    _set_raw_id(path, 200)
    return "val", "frame001", path, "holds raw ids 200"


def _missing_val_label(root, drawn, pool):
    (root / "valannot" / "frame002.png").unlink()
    return "val", "frame002", root / "val" / "frame002.png", "has no label"


def _unreadable_val_image(root, drawn, pool):
    path = root / "val" / "frame000.png"
    path.write_text("not an image")
    return "val", "frame000", path, "cannot read"


CASES = [
    _missing_label, _label_wrong_size, _id_outside_map_labelled, _label_truncated_labelled,
    _unreadable_unlabelled_image, _id_outside_map_val, _missing_val_label, _unreadable_val_image,
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__.strip("_"))
def test_broken_example_stops_the_run_naming_the_file(tmp_path, case):
    root = write_camvid_tree(tmp_path / "camvid")
    split, key, path, words = case(root, *_drawn_and_pool(root))
    with pytest.raises(DatasetError) as error:
        sources.prepare_domains(_config(root))
    message = str(error.value)
    assert f"domain 'camvid', split '{split}': 1 broken example(s)" in message
    assert str(path) in message and words in message
    assert "data.on_broken: skip" in message


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__.strip("_"))
def test_broken_example_is_skipped_counted_and_named(tmp_path, case):
    root = write_camvid_tree(tmp_path / "camvid")
    drawn, pool = _drawn_and_pool(root)
    split, key, path, words = case(root, drawn, pool)
    notes = []
    (inputs,) = sources.prepare_domains(_config(root, "skip"), echo=notes.append)

    used = {"train": inputs.labeled + inputs.unlabeled, "val": inputs.val}
    assert key not in {e.key for e in used[split]}
    assert len(inputs.labeled) == LABELED
    assert len(inputs.val) == (2 if split == "val" else 3)
    assert len(inputs.labeled) + len(inputs.unlabeled) == (7 if split == "train" else 8)
    (skipped,) = inputs.skipped
    assert (skipped.split, skipped.key, skipped.file) == (split, key, str(path))
    assert words in skipped.reason

    manifest = tmp_path / "manifest.json"
    pipeline.write_manifest(manifest, {i.domain.name: i.manifest_entry() for i in [inputs]})
    entry = json.loads(manifest.read_text())["camvid"]
    assert entry["num_skipped"] == 1
    assert entry["skipped"] == [skipped.to_json()]
    (note,) = notes
    assert note.startswith("[data] camvid: skipped 1 broken example(s)") and str(path) in note


def test_redraw_after_skipping_a_labelled_example_is_seeded(tmp_path):
    root = write_camvid_tree(tmp_path / "camvid")
    drawn, pool = _drawn_and_pool(root)
    _id_outside_map_labelled(root, drawn, pool)
    first = sources.prepare_domains(_config(root, "skip"))[0]
    again = sources.prepare_domains(_config(root, "skip"))[0]
    assert [e.key for e in first.labeled] == [e.key for e in again.labeled]
    assert drawn[1] not in [e.key for e in first.labeled]


def test_skip_leaves_too_few_images(tmp_path):
    root = write_camvid_tree(tmp_path / "camvid")
    for name in ("frame000", "frame001"):
        (root / "trainannot" / f"{name}.png").unlink()
    with pytest.raises(ConfigError, match=r"asked for 7 labelled .* only 6 usable ones \(2 broken"):
        sources.prepare_domains(_config(root, "skip", labeled=7))


def test_skip_fills_max_val_images_with_usable_ones(tmp_path):
    root = write_camvid_tree(tmp_path / "camvid")
    (root / "valannot" / "frame000.png").unlink()
    config = _config(root, "skip")
    config.data.max_val_images = 2
    (inputs,) = sources.prepare_domains(config)
    assert [e.key for e in inputs.val] == ["frame001", "frame002"]
    assert [b.key for b in inputs.skipped] == ["frame000"]


def test_stop_manifest_is_unchanged_when_nothing_is_broken(tmp_path):
    root = write_camvid_tree(tmp_path / "camvid")
    (inputs,) = sources.prepare_domains(_config(root))
    assert set(inputs.manifest_entry()) == {"root", "labeled", "unlabeled", "val", "splits"}
    (skipping,) = sources.prepare_domains(_config(root, "skip"))
    assert skipping.manifest_entry()["num_skipped"] == 0
    assert [e.key for e in skipping.labeled] == [e.key for e in inputs.labeled]


def test_unchecked_preparation_lists_strictly(tmp_path):
    root = write_camvid_tree(tmp_path / "camvid")
    (root / "trainannot" / "frame004.png").unlink()
    with pytest.raises(DatasetError, match="frame004.png has no label"):
        sources.prepare_domains(_config(root, "skip"), check=False)


def test_a_truncated_unlabelled_image_is_named_after_a_decode_failure(tmp_path):
    # The start-up check reads only the header of unlabelled images (cost);
    # a corrupt pixel body there is named once tf.data trips over it.
    root = write_camvid_tree(tmp_path / "camvid")
    drawn, pool = _drawn_and_pool(root)
    path = root / "train" / f"{pool[0]}.png"
    _truncate_keeping_header(path, "RGB")
    (inputs,) = sources.prepare_domains(_config(root))
    error = sources.diagnose_unreadable([inputs])
    assert str(path) in str(error) and "cannot decode" in str(error)


def test_sunrgbd_list_form_end_to_end(tmp_path):
    root = dataset_trees.write_sunrgbd_lists(tmp_path / "sun", counts={"train": 5, "test": 2})
    (inputs,) = sources.prepare_domains(
        _config(root, name="sunrgbd", labeled=2, val_split="test")
    )
    assert len(inputs.labeled) == 2 and len(inputs.val) == 2
    assert inputs.val[0].label == str(root / "label37" / "test" / "00000001.png")
    # Raw 0 (unlabelled) -> ignore, raw 1..37 -> train ids 0..36.
    batch = next(iter(pipeline.eval_dataset(inputs.domain, inputs.val, 2)))
    labels = batch["sunrgbd"]["labels"].numpy()
    raw = np.stack([np.asarray(Image.open(e.label)) for e in inputs.val]).astype(int)
    np.testing.assert_array_equal(labels, np.where(raw == 0, 255, raw - 1))


# -- config keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain, data, message",
    [
        ({}, {"on_broken": "ignore"}, "key 'data.on_broken': expected one of: stop, skip"),
        ({"source": "zip"}, {}, "key 'domains.0.source': expected one of: folder, tfds"),
        ({"source": "tfds"}, {}, "key 'domains.0.source': domain 'camvid' has no TFDS source"),
        ({"manual_dir": "/x"}, {}, "key 'domains.0.manual_dir': only used with source: tfds"),
    ],
)
def test_config_keys_are_validated(domain, data, message):
    mapping = {"domains": [{"name": "camvid", "root": "/data", **domain}], "data": data}
    with pytest.raises(ConfigError, match=message):
        config_lib.config_from_dict(mapping)


def test_config_keys_defaults_and_tfds_entry():
    entry = {"name": "cityscapes", "root": "~/tfds", "source": "tfds", "manual_dir": "~/z"}
    config = config_lib.config_from_dict({"domains": [entry]})
    assert config.data.on_broken == "stop"
    assert (config.domains[0].source, config.domains[0].manual_dir) == ("tfds", "~/z")
    assert config_lib.config_from_dict(
        {"domains": [{"name": "camvid", "root": "/data"}]}
    ).domains[0].source == "folder"


def test_a_generated_synthetic_domain_does_not_depend_on_the_runs_seed(tmp_path):
    """The first run to need the data writes it; whatever its seed, the images are the
    generator's default ones (``usss-tf data synth``'s), so runs of other seeds, and the
    same run on a fresh machine, see the same dataset."""
    from usss_tf.data import synthetic

    root = tmp_path / "synth_camvid"
    config = config_lib.config_from_dict({
        "seed": 3, "domains": [{"name": "synth_camvid", "root": str(root), "labeled": 2, "generate": True}]})
    sources.prepare_domains(config, check=False)
    assert json.loads((root / synthetic.MARKER_FILE).read_text())["seed"] == 0
    reference = synthetic.write_synthetic_domain("synth_camvid", tmp_path / "reference")
    written = sorted(p.relative_to(root) for p in root.rglob("*.png"))
    assert written == sorted(p.relative_to(reference) for p in reference.rglob("*.png"))
    for path in written[::20]:
        assert (root / path).read_bytes() == (reference / path).read_bytes()
