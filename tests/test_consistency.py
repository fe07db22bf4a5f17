"""Weak-to-strong consistency: the objective's terms against a hand computation and the
strong views through the real pipeline (a killed univ_full run with both streams resuming
exactly is ``test_cli.py``'s end-to-end test)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from usss_tf import config as config_lib
from usss_tf import method
from usss_tf.method import Objective
from usss_tf.model.segmenter import UniversalSegmenter

DOMAINS = {"a": 3, "b": 4}
ON = {"supervised": 1.0, "consistency_strong": 0.5, "consistency_feature": 0.5}


def _model():
    keras.utils.set_random_seed(0)
    model = UniversalSegmenter(DOMAINS, width=0.25, embedding_dim=8, centroids_per_class=2)
    model.build()
    return model


def _batch(rng, size=(16, 32), n=4):
    batch = {}
    for name, classes in DOMAINS.items():
        weak = rng.uniform(0, 255, (n, *size, 3)).astype(np.float32)
        valid = np.ones((n, *size), np.float32)
        valid[:, :, -3:] = 0  # crop padding on the right
        boxes = np.zeros((n, *size), np.float32)
        boxes[0, 2:9, 5:20] = 1
        boxes[3, 0:6, 0:12] = 1
        batch[name] = {
            "images": tf.constant(rng.uniform(0, 255, (n, *size, 3)), tf.float32),
            "labels": tf.constant(rng.integers(0, classes, (n, *size)), tf.int32),
            "unlabeled": tf.constant(weak),
            "unlabeled_strong": tf.constant(rng.uniform(0, 255, (n, *size, 3)), tf.float32),
            "cutmix_box": tf.constant(boxes),
            "unlabeled_valid": tf.constant(valid),
            "unlabeled_seed": tf.constant(rng.integers(0, 1000, (n, 2)), tf.int64),
        }
    return batch


def test_objective_needs_the_consistency_config_when_its_terms_are_on():
    with pytest.raises(ValueError, match="ConsistencyConfig"):
        Objective(ON)
    assert not Objective({"within_entropy": 1.0}).uses_consistency
    objective = Objective(ON, consistency=config_lib.ConsistencyConfig())
    assert objective.uses_consistency and objective.uses_unlabeled and not objective.uses_embedding


@pytest.mark.parametrize("class_adaptive", [False, True])
def test_consistency_terms_equal_a_hand_computation(class_adaptive):
    """Pseudo-labels from the weak view (same training-mode pass), pasted with the box into
    the strong view's targets; the feature stream drops whole channels by each sample's seed.
    With class-adaptive thresholds each pixel's threshold is its pseudo-label's class's."""
    model = _model()
    batch = _batch(np.random.default_rng(0))
    # A threshold that splits the pixels: the median confidence of domain a's weak view.
    weak = model.decode(model.encode(model.preprocessor("a").normalize(batch["a"]["unlabeled"])), "a",
                        (16, 32))
    threshold = float(np.median(tf.nn.softmax(weak).numpy().max(-1)))
    config = config_lib.ConsistencyConfig(threshold=threshold, feature_dropout=0.5,
                                          distribution_alignment=False,
                                          class_adaptive_threshold=class_adaptive)
    terms = Objective(ON, num_domains=2, consistency=config).terms(model, batch, training=False)
    assert sorted(terms) == sorted(f"{t}/{d}" for t in ON for d in DOMAINS)

    for d in DOMAINS:
        b = batch[d]
        normalize = model.preprocessor(d).normalize
        size = tf.shape(b["unlabeled"])[1:3]
        weak_features = model.encode(normalize(b["unlabeled"]))
        probabilities = tf.nn.softmax(model.decode(weak_features, d, size)).numpy()
        pseudo, confidence = probabilities.argmax(-1), probabilities.max(-1)
        box, valid = b["cutmix_box"].numpy(), b["unlabeled_valid"].numpy()
        assert 0.02 < (confidence >= threshold).mean() < 0.98, "the threshold must split the pixels"
        per_class = np.full(probabilities.shape[-1], threshold)
        if class_adaptive:
            confident = (confidence >= threshold) * valid
            counts = np.array([confident[pseudo == k].sum() for k in range(len(per_class))])
            beta = counts / max(counts.max(), 1.0)
            per_class = threshold * beta / (2 - beta)
            assert len(np.unique(per_class)) > 1

        partner = np.array([1, 0, 3, 2])
        strong = np.where(box[..., None] > 0, b["unlabeled_strong"].numpy()[partner],
                          b["unlabeled_strong"].numpy())
        strong_logits = model.decode(model.encode(normalize(tf.constant(strong))), d, size).numpy()
        mixed = lambda x: np.where(box > 0, x[partner], x)  # noqa: E731
        expected = _hand_loss(mixed(pseudo), mixed(confidence), mixed(valid), strong_logits,
                              per_class[mixed(pseudo)])
        assert float(terms[f"consistency_strong/{d}"]) == pytest.approx(expected, rel=1e-4)

        channels = weak_features.shape[-1]
        keep = np.stack([
            tf.random.stateless_uniform([channels], tf.random.experimental.stateless_fold_in(seed, 1)).numpy()
            >= 0.5 for seed in b["unlabeled_seed"]])
        assert 0 < keep.mean() < 1
        dropped = weak_features.numpy() * keep[:, None, None, :] * 2.0
        feature_logits = model.decode(tf.constant(dropped), d, size).numpy()
        expected = _hand_loss(pseudo, confidence, valid, feature_logits, per_class[pseudo])
        assert float(terms[f"consistency_feature/{d}"]) == pytest.approx(expected, rel=1e-4)


def test_alignment_to_the_labelled_set_uses_the_pipelines_class_frequency():
    """With ``labelled_prior`` rows in the batch, the pseudo-labels align to them: rows equal to
    the batch's own label frequency give the batch-aligned terms, other rows other terms."""
    model = _model()
    batch = _batch(np.random.default_rng(0))
    config = config_lib.ConsistencyConfig(threshold=0.0, distribution_alignment=True,
                                          class_adaptive_threshold=False)
    objective = Objective({"supervised": 1.0, "consistency_strong": 1.0}, num_domains=2,
                          consistency=config)
    aligned_to_batch = objective.terms(model, batch, training=False)
    own, skewed = {}, {}
    for d, classes in DOMAINS.items():
        counts = np.bincount(batch[d]["labels"].numpy().ravel(), minlength=classes)
        rows = np.tile(counts / counts.sum(), (4, 1)).astype(np.float32)
        own[d] = {**batch[d], "labelled_prior": tf.constant(rows)}
        lopsided = np.full(classes, 0.01, np.float32)
        lopsided[-1] = 1.0
        skewed[d] = {**batch[d], "labelled_prior": tf.constant(np.tile(lopsided / lopsided.sum(), (4, 1)))}
    aligned_to_rows = objective.terms(model, own, training=False)
    aligned_to_skew = objective.terms(model, skewed, training=False)
    for key in aligned_to_batch:
        assert float(aligned_to_rows[key]) == pytest.approx(float(aligned_to_batch[key]), rel=1e-5)
    for d in DOMAINS:
        key = f"consistency_strong/{d}"
        assert abs(float(aligned_to_skew[key]) - float(aligned_to_batch[key])) > 1e-3


def _hand_loss(pseudo, confidence, valid, logits, threshold):
    log_p = logits - logits.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_p, pseudo[..., None], -1)[..., 0]
    return float((ce * (confidence >= threshold) * valid).sum() / valid.sum())


@pytest.mark.slow
def test_training_with_consistency_lowers_the_loss_and_is_deterministic():
    """Eight steps lower the loss; the same traced step from the same weights and optimizer
    state repeats them bit for bit (the feature dropout is seeded per sample, nothing else
    is random)."""
    config = config_lib.ConsistencyConfig(threshold=0.0)
    batch = _batch(np.random.default_rng(1))
    model = _model()
    model.objective = Objective(ON, num_domains=2, consistency=config)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.optimizer.build(model.trainable_variables)
    state = model.variables + model.optimizer.variables
    initial = [v.numpy() for v in state]
    step = tf.function(model.train_step)
    results = []
    for _ in range(2):
        for variable, value in zip(state, initial):
            variable.assign(value)
        results.append([float(step(batch)["loss"]) for _ in range(8)])
    assert results[0] == results[1]
    assert results[0][-1] < results[0][0]


def test_univ_paper_is_univ_full_without_consistency_and_the_masked_stage():
    loss = config_lib.LossConfig(consistency_feature=0.25, consistency_paste=0.25)
    full = method.loss_weights(loss, method.plan("univ_full")[-1])
    paper = method.loss_weights(loss, method.plan("univ_paper")[-1])
    assert full["consistency_feature"] > 0
    assert full["consistency_paste"] > 0
    assert paper == {**full, **dict.fromkeys(method.CONSISTENCY_TERMS, 0.0)}
    assert set(method.CONSISTENCY_TERMS) == {"consistency_strong", "consistency_feature", "consistency_paste"}
    # univ_full adds masked image modelling before the paper's stages.
    assert [s.name for s in method.plan("univ_full")] == ["masked"] + [
        s.name for s in method.plan("univ_paper")]


def test_strong_views_come_from_the_pipeline_as_a_function_of_seed_and_step(tmp_path, train_tiny,
                                                                           tiny_run_settings):
    from usss_tf.data import pipeline, sources, synthetic
    roots = synthetic.write_synthetic_domains(tmp_path, ("synth_city",), num_train=6, num_val=1,
                                              size=(32, 64), seed=0)
    cfg = config_lib.config_from_dict({
        **tiny_run_settings, "domains": [{"name": "synth_city", "root": str(roots["synth_city"]),
                                          "labeled": 2, "scale": 0.5}]})
    inputs = sources.prepare_domains(cfg, echo=lambda *_: None)

    def take(start, steps):
        ds = pipeline.train_dataset(inputs, cfg.data, 0, start, steps, consistency=cfg.consistency)
        return [tf.nest.map_structure(lambda x: x.numpy(), b["synth_city"]) for b in ds]

    first, resumed = take(0, 3), take(1, 2)
    weak_only = pipeline.train_dataset(inputs, cfg.data, 0, 0, 1, consistency=cfg.consistency,
                                       strong_view=False)
    assert set(next(iter(weak_only))["synth_city"]) == {
        "images", "labels", "labelled_prior", "unlabeled", "unlabeled_valid", "unlabeled_seed"}
    for a, b in zip(first[1:], resumed):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    b = first[0]
    assert b["unlabeled_strong"].shape == b["unlabeled"].shape
    assert b["cutmix_box"].shape == b["unlabeled_valid"].shape == b["unlabeled"].shape[:3]
    # Scale 0.5 of 32x64 images, random scale up to 1.25: the 32x64 crop is mostly padding.
    assert 0 < b["unlabeled_valid"].mean() < 1
    assert not np.array_equal(b["unlabeled_strong"], b["unlabeled"])
