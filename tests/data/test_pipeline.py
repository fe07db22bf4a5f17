import json

import numpy as np
import pytest
from PIL import Image
import tensorflow as tf

from usss_tf import config as config_lib
from usss_tf.data import pipeline, sources
from usss_tf.errors import ConfigError, DatasetError


def _config(root, labeled=3, **data):
    mapping = {
        "domains": [
            {"name": "synth_camvid", "root": str(root), "labeled": labeled},
            {"name": "camvid", "root": str(root), "labeled": labeled},
        ],
        "data": {"crop": [24, 40], "batch_size": 2, "unlabeled_batch_size": 3, **data},
    }
    return config_lib.config_from_dict(mapping)


def _take(ds, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.take(n)]


def test_labeled_split_is_seeded_sorted_and_disjoint(camvid_tree):
    inputs = sources.prepare_domains(_config(camvid_tree))
    again = sources.prepare_domains(_config(camvid_tree))
    for a, b in zip(inputs, again):
        assert [e.key for e in a.labeled] == [e.key for e in b.labeled]
        assert len(a.labeled) == 3 and len(a.unlabeled) == 5
        assert not {e.key for e in a.labeled} & {e.key for e in a.unlabeled}
    # Different domains draw different subsets from the same files.
    assert [e.key for e in inputs[0].labeled] != [e.key for e in inputs[1].labeled]


def test_too_many_labeled_images_is_an_error(camvid_tree):
    with pytest.raises(ConfigError, match="asked for 50 labelled images"):
        sources.prepare_domains(_config(camvid_tree, labeled=50))


def test_manifest_written_once_and_checked(camvid_tree, tmp_path):
    inputs = sources.prepare_domains(_config(camvid_tree))
    entries = {i.domain.name: i.manifest_entry() for i in inputs}
    path = tmp_path / "manifest.json"
    pipeline.write_manifest(path, entries)
    saved = json.loads(path.read_text())
    assert len(saved["camvid"]["labeled"]) == 3
    pipeline.write_manifest(path, entries)  # same content: fine
    entries["camvid"]["labeled"] = entries["camvid"]["labeled"][:2]
    with pytest.raises(DatasetError, match=r"camvid \(labeled\)"):
        pipeline.write_manifest(path, entries)


def test_a_resumed_run_refuses_changed_data_and_accepts_an_older_manifest(camvid_tree, tmp_path):
    path = tmp_path / "manifest.json"
    inputs = sources.prepare_domains(_config(camvid_tree))[1]
    pipeline.write_manifest(path, {"camvid": inputs.manifest_entry()})
    assert json.loads(path.read_text())["camvid"]["splits"]["val"]["files"] == 3
    label = sorted((camvid_tree / "valannot").glob("*.png"))[-1]
    Image.fromarray(np.full((32, 64), 3, np.uint8)).save(label)  # same name, other content
    changed = sources.prepare_domains(_config(camvid_tree))[1]
    assert [e.key for e in changed.labeled] == [e.key for e in inputs.labeled]
    with pytest.raises(DatasetError, match=r"camvid \(splits\)"):
        pipeline.write_manifest(path, {"camvid": changed.manifest_entry()})
    older = inputs.manifest_entry()
    del older["splits"]
    path.write_text(json.dumps({"camvid": older}))  # written before splits were recorded
    pipeline.write_manifest(path, {"camvid": changed.manifest_entry()})


def test_same_seed_same_batches_and_resume_matches(camvid_tree):
    cfg = _config(camvid_tree)
    inputs = sources.prepare_domains(cfg)
    first = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 4), 4)
    second = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 4), 4)
    resumed = _take(pipeline.train_dataset(inputs, cfg.data, 0, 2, 2), 2)
    other_seed = _take(pipeline.train_dataset(inputs, cfg.data, 1, 0, 4), 4)
    for a, b in zip(first, second):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    for a, b in zip(first[2:], resumed):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(first[0]["camvid"]["images"], other_seed[0]["camvid"]["images"])


def test_the_masked_stage_draws_every_training_image_with_its_mask_per_seed_and_step(camvid_tree):
    cfg = _config(camvid_tree)
    inputs = sources.prepare_domains(cfg)
    masked_config = config_lib.MaskedModellingConfig(mask_ratio=0.5, patch=8)

    def take(start, steps, seed=0):
        return _take(pipeline.masked_dataset(inputs, cfg.data, masked_config, seed, start, steps), steps)

    first, resumed = take(0, 4), take(1, 3)
    for a, b in zip(first[1:], resumed):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(first[0]["camvid"]["images"], take(0, 1, seed=1)[0]["camvid"]["images"])
    b = first[0]["camvid"]
    assert set(b) == {"images", "image_mask"}  # labels are never read
    # batch_size + unlabeled_batch_size crops; 3 x 5 cells of 8 pixels, 8 masked (7.5 rounds to even).
    assert b["images"].shape == (5, 24, 40, 3) and b["image_mask"].shape == (5, 24, 40, 1)
    assert (b["image_mask"].sum(axis=(1, 2, 3)) == 8 * 64).all()
    assert not np.array_equal(b["image_mask"][0], b["image_mask"][1])
    assert not np.array_equal(b["image_mask"][0], first[0]["synth_camvid"]["image_mask"][0])


def test_the_masked_stage_can_flip_its_crops_only(camvid_tree):
    """``masked_modelling.augment: flips``: every crop is a window of a training
    image or of its mirror image, as stored (no rescaling, padding or colour jitter)."""
    cfg = _config(camvid_tree)
    inputs = sources.prepare_domains(cfg)
    flips, training = (
        _take(pipeline.masked_dataset(inputs, cfg.data, config_lib.MaskedModellingConfig(augment=a), 0, 0, 4), 4)
        for a in ("flips", "training"))
    domain = inputs[1]
    stored = [np.asarray(Image.open(e.image).convert("RGB"), np.float32)
              for e in domain.labeled + domain.unlabeled]
    stored += [s[:, ::-1] for s in stored]

    def is_a_window(crop):
        h, w = crop.shape[:2]
        return any(np.array_equal(crop, s[y:y + h, x:x + w])
                   for s in stored for y in range(s.shape[0] - h + 1) for x in range(s.shape[1] - w + 1))

    crops = [c for b in flips for c in b["camvid"]["images"]]
    assert all(is_a_window(c) for c in crops)
    assert not all(is_a_window(c) for b in training[:1] for c in b["camvid"]["images"])


def test_the_unlabelled_crops_get_their_patch_masks_per_seed_and_step(camvid_tree):
    cfg = _config(camvid_tree)
    inputs = sources.prepare_domains(cfg)
    masked = config_lib.MaskedModellingConfig(mask_ratio=0.5, patch=8)

    def take(start, steps, masked=masked):
        return _take(pipeline.train_dataset(inputs, cfg.data, 0, start, steps, masked=masked), steps)

    first, resumed = take(0, 3), take(1, 2)
    for a, b in zip(first[1:], resumed):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    b = first[0]["camvid"]
    # unlabeled_batch_size masks of 3 x 5 cells of 8 pixels, 8 masked; the crops are those without masks.
    assert b["unlabeled_mask"].shape == (3, 24, 40, 1)
    assert (b["unlabeled_mask"].sum(axis=(1, 2, 3)) == 8 * 64).all()
    assert not np.array_equal(b["unlabeled_mask"][0], first[0]["synth_camvid"]["unlabeled_mask"][0])
    assert not np.array_equal(b["unlabeled_mask"][0], b["unlabeled_mask"][1])
    other_seed = _take(pipeline.train_dataset(inputs, cfg.data, 1, 0, 1, masked=masked), 1)[0]["camvid"]
    assert not np.array_equal(b["unlabeled_mask"], other_seed["unlabeled_mask"])
    plain = take(0, 1, masked=None)[0]["camvid"]
    assert "unlabeled_mask" not in plain
    np.testing.assert_array_equal(plain["unlabeled"], b["unlabeled"])


def test_batch_structure_shapes_and_label_values(camvid_tree):
    cfg = _config(camvid_tree)
    inputs = sources.prepare_domains(cfg)
    (batch,) = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 1), 1)
    assert set(batch) == {"synth_camvid", "camvid"}
    b = batch["synth_camvid"]
    assert b["images"].shape == (2, 24, 40, 3) and b["images"].dtype == np.float32
    assert b["labels"].shape == (2, 24, 40) and b["unlabeled"].shape == (3, 24, 40, 3)
    assert 0 <= b["images"].min() and b["images"].max() <= 255
    # synth_camvid has 7 classes; anything else must be ignore.
    assert set(np.unique(b["labels"])) <= set(range(7)) | {255}


def test_labels_go_through_the_domain_table(tmp_path):
    from conftest import write_camvid_tree

    root = write_camvid_tree(tmp_path / "c", num_classes=12)  # 11 = CamVid void
    cfg = _config(root)
    cfg.domains = cfg.domains[1:]  # camvid only: raw 7..10 are not in synth_camvid's space
    inputs = sources.prepare_domains(cfg)
    ds = pipeline.eval_dataset(inputs[0].domain, inputs[0].val, 2)
    labels = np.concatenate([b["camvid"]["labels"].numpy().ravel() for b in ds])
    assert 255 in labels and 11 not in labels


def test_one_pass_covers_every_labelled_image_once(camvid_tree):
    cfg = _config(camvid_tree, augment={"min_scale": 1.0, "max_scale": 1.0, "flip": False,
                                        "photometric": False, "copy_paste": False, "class_hue": False},
                 crop=[32, 64], batch_size=3)
    inputs = sources.prepare_domains(cfg)
    (batch,) = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 1, with_unlabeled=False), 1)
    ds = pipeline.eval_dataset(inputs[0].domain, inputs[0].labeled, 3)
    expected = next(iter(ds))["synth_camvid"]["images"].numpy()
    got = batch["synth_camvid"]["images"]
    # Same three images, in a seeded order.
    assert sorted(map(float, got.sum((1, 2, 3)))) == pytest.approx(sorted(map(float, expected.sum((1, 2, 3)))))


def test_missing_root_names_the_key_and_folder(tmp_path):
    cfg = _config(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"domains.0.root.*nowhere"):
        sources.prepare_domains(cfg)


def test_alignment_to_the_labelled_set_adds_its_class_frequency_to_every_step(camvid_tree):
    from PIL import Image

    cfg = _config(camvid_tree)
    inputs = sources.prepare_domains(cfg)
    to_batch = config_lib.ConsistencyConfig(alignment_target="batch")
    plain = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 2, consistency=to_batch), 2)
    assert "labelled_prior" not in plain[0]["camvid"]
    consistency = cfg.consistency
    assert consistency.alignment_target == "labelled_set"  # the default
    steps = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 2, consistency=consistency), 2)
    for domain in inputs:
        table = domain.domain.lookup_table()
        counts = np.zeros(domain.domain.num_classes)
        for example in domain.labeled:  # counted by hand from the files
            ids = table[np.array(Image.open(example.label))]
            counts += np.bincount(ids[ids != 255].ravel(), minlength=len(counts))
        for step, before in zip(steps, plain):
            rows = step[domain.domain.name]["labelled_prior"]
            assert rows.shape == (cfg.data.batch_size, len(counts))
            np.testing.assert_allclose(rows, np.tile(counts / counts.sum(), (len(rows), 1)), rtol=1e-6)
            for key, value in before[domain.domain.name].items():  # nothing else changes
                np.testing.assert_array_equal(step[domain.domain.name][key], value)


def test_an_unknown_alignment_target_names_the_key():
    with pytest.raises(ConfigError, match="key 'consistency.alignment_target'"):
        config_lib.config_from_dict({"domains": [{"name": "camvid", "root": "x"}],
                                     "consistency": {"alignment_target": "dataset"}})


def test_class_hue_turns_only_the_hue_free_classes_of_the_labelled_crops(camvid_tree):
    cfg = _config(camvid_tree, augment={"photometric": False, "class_hue": False})
    inputs = sources.prepare_domains(cfg)
    plain = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 2), 2)
    cfg.data.augment.class_hue = True
    cfg.data.augment.class_hue_probability = 1.0
    # The tree's pixels are noise in every channel: each class present spreads its hue.
    cfg.data.augment.class_hue_max_concentration = 1.0
    free = {i.domain.name: pipeline.labelled_hue_free_classes(i, 1.0) for i in inputs}
    assert free["camvid"][:3].all() and free["synth_camvid"][:3].all()
    worked_out = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 1), 1)
    given = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 1, hue_free=free), 1)
    for name in free:  # Not given: worked out from the labelled images, the same classes.
        np.testing.assert_array_equal(worked_out[0][name]["images"], given[0][name]["images"])
    free["camvid"][1] = False  # Given, not worked out: class 1 of camvid keeps its colours.
    turned = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 2, hue_free=free), 2)
    again = _take(pipeline.train_dataset(inputs, cfg.data, 0, 0, 2, hue_free=free), 2)
    for before, after, repeat in zip(plain, turned, again):
        for name in ("synth_camvid", "camvid"):
            b, a = before[name], after[name]
            np.testing.assert_array_equal(a["labels"], b["labels"])
            np.testing.assert_array_equal(a["unlabeled"], b["unlabeled"])
            np.testing.assert_array_equal(a["images"], repeat[name]["images"])  # per (seed, step)
            labels = a["labels"]
            kept = (labels == 255) | ~free[name][np.where(labels == 255, 0, labels)]
            np.testing.assert_array_equal(a["images"][kept], b["images"][kept])
            moved = np.abs(a["images"] - b["images"]).max(-1) > 1.0
            assert moved[~kept].mean() > 0.3
    with pytest.raises(ValueError, match=r"hue_free\['camvid'\]: 2 entries for 11 classes"):
        pipeline.train_dataset(inputs, cfg.data, 0, 0, 1, hue_free={"camvid": [True, False]})
