"""Copy-paste of the small classes' labelled pixels into unlabelled crops, and its loss term
(two replicas equal one device with it on: ``test_distribution.py``; the pipeline builds the
view on the global batch: ``data/test_pipeline.py``)."""

import numpy as np
import pytest
import tensorflow as tf

from usss_tf import config as config_lib
from usss_tf.data import copy_paste
from usss_tf.method import Objective

from test_consistency import _batch, _hand_loss, _model


def test_the_small_classes_are_those_under_one_in_c_of_the_labelled_pixels():
    # 20 labelled pixels, 3 classes: 13 of class 0, 5 of class 1, 2 of class 2, 4 ignored.
    labels = np.array([[0] * 13 + [1] * 5 + [2] * 2 + [255] * 4], np.int32).reshape(1, 4, 6)
    np.testing.assert_array_equal(copy_paste.small_classes(labels, 3).numpy(), [False, True, True])
    np.testing.assert_array_equal(copy_paste.small_classes(labels, 4).numpy(), [False, False, True, True])


def test_paste_small_classes_pastes_labelled_pixels_by_partner():
    rng = np.random.default_rng(0)
    labels = np.zeros((2, 4, 4), np.int32)  # class 0 is large everywhere
    labels[0, 0, :2] = 1
    labels[1, 3, 3] = 2
    labels[1, 0, 0] = 255
    images = rng.uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    unlabeled = rng.uniform(0, 255, (3, 4, 4, 3)).astype(np.float32)
    pasted, mask, pasted_labels = (t.numpy() for t in copy_paste.paste_small_classes(
        images, labels, unlabeled, 3))
    partner = [0, 1, 0]  # unlabelled crop i gets labelled crop i mod 2
    for i, p in enumerate(partner):
        expected_mask = np.isin(labels[p], [1, 2])
        np.testing.assert_array_equal(mask[i], expected_mask)
        np.testing.assert_array_equal(pasted[i], np.where(expected_mask[..., None], images[p], unlabeled[i]))
        np.testing.assert_array_equal(pasted_labels[i], np.where(expected_mask, labels[p], 255))
    assert mask.sum() == 2 + 1 + 2


def test_paste_within_labelled_pastes_the_next_crops_small_classes_with_their_labels():
    rng = np.random.default_rng(1)
    labels = np.zeros((3, 4, 4), np.int32)  # class 0 is large everywhere
    labels[0, 0, :2] = 1
    labels[1, 3, 3] = 2
    labels[2, 1, 1] = 255
    labels[2, 2, 2] = 1
    images = rng.uniform(0, 255, (3, 4, 4, 3)).astype(np.float32)
    pasted, pasted_labels = (t.numpy() for t in copy_paste.paste_within_labelled(images, labels, 3))
    for i, p in enumerate([1, 2, 0]):  # crop i gets crop i + 1
        mask = np.isin(labels[p], [1, 2])
        np.testing.assert_array_equal(pasted[i], np.where(mask[..., None], images[p], images[i]))
        np.testing.assert_array_equal(pasted_labels[i], np.where(mask, labels[p], labels[i]))
    assert pasted_labels[0, 3, 3] == 2 and pasted_labels[1, 2, 2] == 1 and pasted_labels[2, 0, 0] == 1
    assert pasted_labels[2, 1, 1] == 255  # its own ignore pixel: crop 0 has class 0 there
    single, single_labels = copy_paste.paste_within_labelled(images[:1], labels[:1], 3)
    np.testing.assert_array_equal(single.numpy(), images[:1])
    np.testing.assert_array_equal(single_labels.numpy(), labels[:1])


def test_copy_paste_term_equals_a_hand_computation():
    """Targets: the true labels where pasted (counted whatever the threshold), the weak view's
    confident pseudo-labels elsewhere; logits of the pasted crops."""
    model = _model()
    batch = _batch(np.random.default_rng(0))
    for d, classes in (("a", 3), ("b", 4)):
        pasted, _, pasted_labels = copy_paste.paste_small_classes(
            batch[d]["images"], batch[d]["labels"], batch[d]["unlabeled"], classes)
        batch[d] = {**batch[d], "unlabeled_pasted": pasted, "pasted_labels": pasted_labels}
    weights = {"supervised": 1.0, "consistency_paste": 1.0}
    for d, classes in (("a", 3), ("b", 4)):
        b = {k: v.numpy() for k, v in batch[d].items()}
        normalize = model.preprocessor(d).normalize
        size = b["unlabeled"].shape[1:3]
        probabilities = tf.nn.softmax(model.decode(model.encode(normalize(b["unlabeled"])), d, size)).numpy()
        pseudo, confidence = probabilities.argmax(-1), probabilities.max(-1)
        threshold = float(np.median(confidence))  # splits the pixels
        assert 0.02 < (confidence >= threshold).mean() < 0.98
        config = config_lib.ConsistencyConfig(threshold=threshold, distribution_alignment=False,
                                              class_adaptive_threshold=False)
        terms = Objective(weights, num_domains=2, consistency=config).terms(
            model, {d: batch[d]}, training=False)
        assert sorted(terms) == [f"consistency_paste/{d}", f"supervised/{d}"]
        counts = np.bincount(b["labels"].ravel(), minlength=classes)
        small = counts / counts.sum() < 1 / classes
        assert 0 < small.sum() < classes
        mask = small[b["labels"]]  # four labelled and four unlabelled crops: partner i is i
        pasted = np.where(mask[..., None], b["images"], b["unlabeled"])
        logits = model.decode(model.encode(normalize(tf.constant(pasted))), d, size).numpy()
        expected = _hand_loss(np.where(mask, b["labels"], pseudo), np.where(mask, 1.0, confidence),
                              np.where(mask, 1.0, b["unlabeled_valid"]), logits, threshold)
        assert float(terms[f"consistency_paste/{d}"]) == pytest.approx(expected, rel=1e-4)


def test_the_pipeline_builds_the_view_on_the_global_batch(tmp_path, tiny_run_settings):
    from usss_tf.data import pipeline, sources, synthetic
    roots = synthetic.write_synthetic_domains(tmp_path, ("synth_city",), num_train=6, num_val=1,
                                              size=(32, 64), seed=0)
    cfg = config_lib.config_from_dict({
        **tiny_run_settings, "domains": [{"name": "synth_city", "root": str(roots["synth_city"]),
                                          "labeled": 2, "scale": 0.5}]})
    inputs = sources.prepare_domains(cfg, echo=lambda *_: None)
    plain = pipeline.train_dataset(inputs, cfg.data, 0, 0, 2, consistency=cfg.consistency)
    pasted = pipeline.train_dataset(inputs, cfg.data, 0, 0, 2, consistency=cfg.consistency,
                                    copy_paste=True)
    assert "unlabeled_pasted" not in next(iter(plain))["synth_city"]
    for a, b in zip(plain, pasted):
        a, b = a["synth_city"], b["synth_city"]
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())  # the rest is unchanged
        view, mask, labels = copy_paste.paste_small_classes(a["images"], a["labels"], a["unlabeled"], 10)
        np.testing.assert_array_equal(b["unlabeled_pasted"].numpy(), view.numpy())
        np.testing.assert_array_equal(b["pasted_labels"].numpy(), labels.numpy())
        assert mask.numpy().any()


def test_the_labelled_copy_paste_augmentation_changes_the_labelled_crops_only(tmp_path, tiny_run_settings):
    from usss_tf.data import pipeline, sources, synthetic
    roots = synthetic.write_synthetic_domains(tmp_path, ("synth_city",), num_train=6, num_val=1,
                                              size=(32, 64), seed=0)
    settings = {**tiny_run_settings, "domains": [{"name": "synth_city", "root": str(roots["synth_city"]),
                                                  "labeled": 3, "scale": 0.5}]}
    cfg = config_lib.config_from_dict({**settings, "data": {**settings.get("data", {}),
                                                              "augment": {"copy_paste": False}}})
    augmented = config_lib.config_from_dict(settings)
    assert augmented.data.augment.copy_paste  # the default
    inputs = sources.prepare_domains(cfg, echo=lambda *_: None)
    plain = pipeline.train_dataset(inputs, cfg.data, 0, 0, 2)
    pasted = pipeline.train_dataset(inputs, augmented.data, 0, 0, 2)
    changed = 0
    for a, b in zip(plain, pasted):
        a, b = a["synth_city"], b["synth_city"]
        np.testing.assert_array_equal(a["unlabeled"].numpy(), b["unlabeled"].numpy())
        images, labels = copy_paste.paste_within_labelled(a["images"], a["labels"], 10)
        np.testing.assert_array_equal(b["images"].numpy(), images.numpy())
        np.testing.assert_array_equal(b["labels"].numpy(), labels.numpy())
        changed += int((b["labels"].numpy() != a["labels"].numpy()).sum())
    assert changed > 0

