"""Tests for usss_tf.data.tfds_source: Cityscapes through the real TFDS builder.

The test writes tiny manual-download zips with the member layout of the real
``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` (top-level
README and license, ``leftImg8bit/{split}/{city}/..._leftImg8bit.png``,
``gtFine/{split}/{city}/..._gtFine_{labelIds,color,polygons}...``), lets the
``cityscapes/semantic_segmentation`` builder prepare them (no network), and
checks what comes out end to end: the builder's own features, the
materialised Cityscapes tree, and raw labelIds -> train ids in the pipeline.
"""

import dataclasses
import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cityscapes_labels
from PIL import Image

from usss_tf import config as config_lib
from usss_tf import domains
from usss_tf.data import pipeline, readers, sources, tfds_source
from usss_tf.errors import DatasetError

CITIES = {"train": {"aachen": 3, "bremen": 2}, "val": {"frankfurt": 2}, "test": {"berlin": 1}}
SIZE = (16, 32)


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_manual_zips(folder, seed=0):
    """The two manual-download zips; returns {member path: bytes} of images and labelIds."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    members = {}
    with zipfile.ZipFile(folder / "leftImg8bit_trainvaltest.zip", "w") as images, \
            zipfile.ZipFile(folder / "gtFine_trainvaltest.zip", "w") as labels:
        for archive in (images, labels):
            archive.writestr("README", "tiny test copy")
            archive.writestr("license.txt", "tiny test copy")
        for split, cities in CITIES.items():
            for city, count in cities.items():
                for frame in range(count):
                    stem = f"{city}_{frame:06d}_{19 + frame:06d}"
                    raw = rng.integers(0, 34, SIZE, dtype=np.uint8)  # every labelId, incl. void
                    image = np.stack([raw * 7, 255 - raw * 7, np.full(SIZE, 9, np.uint8)], -1)
                    image_member = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
                    label_member = f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"
                    members[image_member], members[label_member] = _png(image), _png(raw)
                    images.writestr(image_member, members[image_member])
                    labels.writestr(label_member, members[label_member])
                    labels.writestr(f"gtFine/{split}/{city}/{stem}_gtFine_color.png", _png(image))
                    labels.writestr(f"gtFine/{split}/{city}/{stem}_gtFine_polygons.json", "{}")
    return members


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data_dir, manual_dir, zip members, materialised root) prepared once for the module."""
    base = tmp_path_factory.mktemp("tfds")
    members = write_manual_zips(base / "manual")
    notes = []
    root = tfds_source.materialize(
        "cityscapes", base / "data", ("train", "val"), manual_dir=base / "manual",
        echo=notes.append,
    )
    assert [n.split(":")[0] for n in notes] == ["[data] cityscapes"] * 3  # prepare + 2 splits
    return base / "data", base / "manual", members, root


def test_builder_yields_raw_label_ids(prepared):
    import tensorflow_datasets as tfds

    data_dir, _, members, _ = prepared
    builder = tfds.builder("cityscapes/semantic_segmentation", data_dir=str(data_dir))
    assert builder.is_prepared()
    assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {
        "train": 5, "validation": 2, "test": 1,
    }
    features = builder.info.features
    assert {"image_id", "image_left", "segmentation_label"} <= set(features.keys())
    skip = tfds.decode.SkipDecoding()
    dataset = builder.as_dataset(
        split="validation", decoders={"image_left": skip, "segmentation_label": skip}
    )
    for example in tfds.as_numpy(dataset):
        image_id = example["image_id"].decode()
        member = f"gtFine/val/frankfurt/{image_id}_gtFine_labelIds.png"
        # Stored verbatim: the label PNG holds the raw 34-id labelIds.
        assert example["segmentation_label"] == members[member]


def test_materialised_tree_is_the_cityscapes_layout_byte_for_byte(prepared):
    _, _, members, root = prepared
    assert root == prepared[0].absolute() / "usss_tf/cityscapes/semantic_segmentation/1.0.0"
    written = {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*.png")
    }
    expected = {m: b for m, b in members.items() if "/test/" not in m}
    assert written == expected  # test split not asked for, colour labels not carried
    for split, count in (("train", 5), ("val", 2)):
        marker = json.loads((root / f".complete-{split}.json").read_text())
        assert marker == {
            "builder": "cityscapes/semantic_segmentation/1.0.0", "split": split, "examples": count,
        }
    train = readers.list_examples("cityscapes", root, "train")
    assert [e.key for e in train[:2]] == [
        "aachen/aachen_000000_000019", "aachen/aachen_000001_000020",
    ]


def test_raw_ids_map_to_train_ids_end_to_end(prepared):
    data_dir, manual_dir, members, _ = prepared
    config = config_lib.config_from_dict({
        "domains": [{
            "name": "cityscapes", "source": "tfds", "root": str(data_dir),
            "manual_dir": str(manual_dir), "labeled": 2,
        }],
        "data": {"crop": [16, 32]},
    })
    (inputs,) = sources.prepare_domains(config)
    assert len(inputs.labeled) == 2 and len(inputs.unlabeled) == 3 and len(inputs.val) == 2
    batch = next(iter(pipeline.eval_dataset(inputs.domain, inputs.val, 2)))
    labels = batch["cityscapes"]["labels"].numpy()
    raw = np.stack([np.asarray(Image.open(e.label)) for e in inputs.val])
    official = np.full(256, 255)
    for label in cityscapes_labels.labels:
        if label.id >= 0 and label.trainId not in (-1, 255):
            official[label.id] = label.trainId
    np.testing.assert_array_equal(labels, official[raw])
    assert set(np.unique(labels)) == set(range(19)) | {255}
    assert inputs.domain is domains.get_domain("cityscapes")


def test_materialising_again_writes_nothing(prepared):
    data_dir, manual_dir, _, root = prepared
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    notes = []
    again = tfds_source.materialize(
        "cityscapes", data_dir, ("val", "train", "val"), manual_dir=manual_dir, echo=notes.append
    )
    assert again == root and notes == []
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_interrupted_split_is_written_again(prepared, tmp_path):
    data_dir, manual_dir, members, _ = prepared
    # A copy of the prepared data dir whose val split was cut short before its marker.
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    root = tfds_source.cache_dir(copy, "cityscapes/semantic_segmentation", "1.0.0")
    (root / ".complete-val.json").unlink()
    for path in list((root / "gtFine" / "val").rglob("*.png"))[:1]:
        path.unlink()
    tfds_source.materialize("cityscapes", copy, ("val",), manual_dir=manual_dir)
    assert len(readers.list_examples("cityscapes", root, "val")) == 2
    assert not list(root.glob(".tmp-*"))


def test_missing_manual_zips_name_the_files(tmp_path):
    with pytest.raises(DatasetError) as error:
        tfds_source.materialize(
            "cityscapes", tmp_path / "data", ("train",), where="key 'domains.0'"
        )
    message = str(error.value)
    assert message.startswith("key 'domains.0': TFDS dataset cityscapes/semantic_segmentation")
    manual = tmp_path / "data" / "downloads" / "manual"
    assert str(manual / "leftImg8bit_trainvaltest.zip") in message
    assert str(manual / "gtFine_trainvaltest.zip") in message


def test_a_run_is_evaluated_on_its_materialised_folder_from_any_directory(prepared, tmp_path,
                                                                         monkeypatch):
    """A relative TFDS root resolves against the working directory: evaluation reads the
    folder the run recorded, and materialises a split it lacks there, never where it runs."""
    data_dir, manual_dir, _, _ = prepared
    trained_in = tmp_path / "trained_in"
    shutil.copytree(data_dir, trained_in / "tfds")
    root = tfds_source.cache_dir(trained_in / "tfds", "cityscapes/semantic_segmentation", "1.0.0")
    config = config_lib.config_from_dict({
        "domains": [{"name": "cityscapes", "source": "tfds", "root": "tfds",
                     "manual_dir": str(manual_dir), "labeled": 2}],
        "data": {"crop": [16, 32]},
    })
    domain_config, entry = config.domains[0], {"root": str(root)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    notes = []
    assert sources.run_root(domain_config, 0, entry, ("val",), echo=notes.append) == root
    assert notes == [] and list(elsewhere.iterdir()) == []
    assert sources.run_root(domain_config, 0, entry, ("test",), echo=notes.append) == root
    assert len(readers.list_examples("cityscapes", root, "test")) == 1
    assert list(elsewhere.iterdir()) == []
    # Not the data_dir the config names (another relative path): resolved as training would.
    other = dataclasses.replace(domain_config, root="other")
    assert sources.run_root(other, 0, entry, ("val",), echo=notes.append) != root
    assert (elsewhere / "other").is_dir() and "the run read" in notes[-1]


def test_unknown_split_is_named(prepared):
    data_dir, manual_dir, _, _ = prepared
    with pytest.raises(DatasetError, match="split 'extra' is not in TFDS cityscapes"):
        tfds_source.materialize("cityscapes", data_dir, ("extra",), manual_dir=manual_dir)
    assert tfds_source.tfds_split("val") == "validation"
    assert tfds_source.tfds_split("test") == "test"
