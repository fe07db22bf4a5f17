import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from usss_tf import config as config_lib
from usss_tf import method
from usss_tf.data import colour_transfer
from usss_tf.method import Objective
from usss_tf.model.segmenter import UniversalSegmenter


def test_every_method_but_supervised_has_a_plan():
    assert set(method.PLANS) | {"supervised"} == set(method.METHODS) == set(config_lib.METHODS)
    assert [s.name for s in method.plan("univ_full")] == ["masked", "pretrain", "centroids", "universal"]
    assert [s.name for s in method.plan("univ_paper")] == ["pretrain", "centroids", "universal"]
    assert [s.name for s in method.plan("univ_basic")] == ["pretrain", "universal"]
    assert [s.name for s in method.plan("finetune")] == ["source", "target"]
    assert [s.name for s in method.final_stages("univ_full")] == ["universal", "centroids", "pretrain"]
    assert method.has_label_centroids("univ_full")
    assert method.has_label_centroids("univ_paper")
    assert not any(method.has_label_centroids(m) for m in ("univ_basic", "finetune", "supervised"))


def test_stages_pick_their_steps_domains_and_losses():
    train = config_lib.TrainConfig(masked_steps=5, pretrain_steps=7, steps=11)
    loss = config_lib.LossConfig(supervised=1.0, within_entropy=0.2, cross_entropy=0.3,
                                 embedding_supervision=0.5, consistency_feature=0.25, consistency_paste=0.25,
                                 cross_domain_supervision=0.0)
    masked, pretrain, centroids, universal = method.plan("univ_full")
    assert [s.steps(train) for s in (masked, pretrain, centroids, universal)] == [5, 7, 0, 11]
    assert method.loss_weights(loss, masked) == {"supervised": 0.0, "masked_reconstruction": 1.0}
    assert method.loss_weights(loss, pretrain) == {"supervised": 1.0, "cross_domain_supervision": 0.0}
    assert method.loss_weights(loss, universal) == dataclasses.asdict(loss)
    assert universal.consistency and method.loss_weights(loss, universal)["consistency_feature"] == 0.25
    assert method.loss_weights(loss, universal)["consistency_paste"] == 0.25
    source, target = method.plan("finetune")
    assert source.select(["a", "b", "c"]) == ["a"] and target.select(["a", "b", "c"]) == ["b", "c"]
    assert method.loss_weights(loss, target) == {"supervised": 1.0, "cross_domain_supervision": 0.0}
    auxiliary = dataclasses.replace(loss, masked_auxiliary=0.5)
    assert method.loss_weights(auxiliary, universal)["masked_auxiliary"] == 0.5
    # univ_paper's universal stage has no consistency terms and no auxiliary reconstruction.
    assert method.loss_weights(auxiliary, method.plan("univ_paper")[2])["masked_auxiliary"] == 0.0


def test_supervised_runs_are_one_domain_univ_basic_runs_of_all_the_steps():
    config = config_lib.config_from_dict({
        "name": "x", "method": "supervised",
        "domains": [{"name": "synth_city", "root": "a"}, {"name": "synth_camvid", "root": "b"}],
        "train": {"pretrain_steps": 5, "steps": 6},
    })
    sub = method.supervised_domain_config(config, config.domains[1])
    assert (sub.method, sub.name, sub.domain_names) == ("univ_basic", "x-synth_camvid", ["synth_camvid"])
    assert (sub.train.pretrain_steps, sub.train.steps) == (11, 0)


def test_objective_weights():
    with pytest.raises(ValueError, match="unknown loss term 'entropy'"):
        Objective({"entropy": 1})
    with pytest.raises(ValueError, match=r"stage of its own; set \['supervised'\] to 0"):
        Objective({"masked_reconstruction": 1})
    with pytest.raises(ValueError, match=r"set \['masked_auxiliary'\] to 0"):
        Objective({"supervised": 0, "masked_reconstruction": 1, "masked_auxiliary": 1})
    assert Objective().weights == {"supervised": 1.0, "cross_domain_supervision": 0.0, "within_entropy": 0.0, "cross_entropy": 0.0,
                                   "embedding_supervision": 0.0, "consistency_strong": 0.0,
                                   "consistency_feature": 0.0, "consistency_paste": 0.0,
                                   "masked_reconstruction": 0.0, "masked_auxiliary": 0.0}
    single = Objective({"cross_entropy": 1.0}, num_domains=1)
    assert single.weights["cross_entropy"] == 0.0 and not single.uses_unlabeled
    full = Objective({"within_entropy": 0.1}, num_domains=2)
    assert full.uses_unlabeled and full.uses_embedding


def test_objective_terms_and_their_weighted_total():
    model = UniversalSegmenter({"a": 3, "b": 4}, width=0.125, depth=0.25, embedding_dim=8,
                               centroids_per_class=2)
    model.build()
    rng = np.random.default_rng(0)
    batch = {
        d: {"images": tf.constant(rng.uniform(0, 255, (2, 16, 32, 3)), tf.float32),
            "labels": tf.constant(rng.integers(0, c, (2, 16, 32)), tf.int32),
            "unlabeled": tf.constant(rng.uniform(0, 255, (2, 16, 32, 3)), tf.float32)}
        for d, c in model.domains.items()
    }
    weights = {"supervised": 1.0, "within_entropy": 0.1, "cross_entropy": 0.2, "embedding_supervision": 0.5}
    objective = Objective(weights, num_domains=2)
    terms = objective.terms(model, batch, training=False)
    assert sorted(terms) == sorted(f"{t}/{d}" for t in weights for d in ("a", "b"))
    expected = sum(weights[k.split("/")[0]] * float(v) for k, v in terms.items())
    assert float(objective.total(terms)) == pytest.approx(expected, rel=1e-6)
    # Entropies of a softmax over C classes lie in [0, log C].
    assert 0.0 <= float(terms["within_entropy/b"]) <= np.log(4) + 1e-6


def test_only_univ_full_with_masked_steps_or_the_auxiliary_term_has_a_reconstruction_head():
    def config(method_name, masked_steps, masked_auxiliary=0.0):
        return config_lib.config_from_dict({
            "name": "x", "method": method_name, "domains": [{"name": "synth_city", "root": "a"}],
            "train": {"masked_steps": masked_steps}, "loss": {"masked_auxiliary": masked_auxiliary}})

    assert method.trains_masked_modelling(config("univ_full", 3))
    assert not method.trains_masked_modelling(config("univ_full", 0))
    assert method.trains_masked_modelling(config("univ_full", 0, masked_auxiliary=0.5))
    # The term is univ_full's universal stage's only: no head for the others.
    assert not any(method.trains_masked_modelling(config(m, 3, masked_auxiliary=0.5))
                   for m in ("univ_paper", "univ_basic", "supervised"))
    assert not any(method.trains_masked_modelling(config(m, 3))
                   for m in ("univ_paper", "univ_basic", "supervised"))
    model = UniversalSegmenter.from_experiment(config("univ_full", 3))
    model.build()
    assert model.reconstruction and any("reconstruction" in v.path for v in model.weights)
    assert UniversalSegmenter.from_config(model.get_config()).reconstruction
    plain = UniversalSegmenter.from_experiment(config("univ_full", 0))
    assert not plain.reconstruction
    with pytest.raises(ValueError, match="no reconstruction head"):
        plain.reconstruct(tf.zeros([1, 2, 4, 8]), (16, 32))


def test_unlabeled_terms_are_the_weighted_ones_some_stage_trains():
    def config(method_name, steps=3, **loss):
        return config_lib.config_from_dict({
            "name": "x", "method": method_name, "domains": [{"name": "synth_city", "root": "a"}],
            "train": {"steps": steps}, "loss": loss})

    assert method.unlabeled_terms(config("univ_full")) == {}  # its defaults: masked stage and labels
    assert method.unlabeled_terms(config("univ_full", consistency_feature=0.25, within_entropy=0.1)) == {
        "within_entropy": 0.1, "consistency_feature": 0.25}
    assert method.unlabeled_terms(config("univ_paper")) == {"within_entropy": 0.1, "cross_entropy": 0.1}
    # No universal steps, or a method whose stages never train them: none.
    assert method.unlabeled_terms(config("univ_paper", steps=0)) == {}
    assert method.unlabeled_terms(config("univ_basic", within_entropy=0.5)) == {}
    # univ_paper has no consistency stage.
    assert method.unlabeled_terms(config("univ_paper", within_entropy=0, cross_entropy=0,
                                         consistency_strong=1.0)) == {}


def _masked_batch(model, rng):
    from usss_tf.data import masking

    return {d: {"images": tf.constant(rng.uniform(0, 255, (3, 16, 32, 3)), tf.float32),
                "image_mask": tf.stack([masking.patch_mask((16, 32), 8, 0.5, [k, i]) for i in range(3)])}
            for k, d in enumerate(model.domains)}


def test_the_masked_stage_reconstructs_every_crop_and_trains_only_the_encoder_and_its_head():
    model = UniversalSegmenter({"a": 3, "b": 4}, width=0.125, depth=0.25, embedding_dim=8,
                               centroids_per_class=2, reconstruction=True)
    model.build()
    batch = _masked_batch(model, np.random.default_rng(0))
    objective = Objective(method.loss_weights(config_lib.LossConfig(), method.plan("univ_full")[0]))
    assert objective.uses_masking and objective.uses_unlabeled
    with tf.GradientTape() as tape:
        terms = objective.terms(model, batch, training=False)
        total = objective.total(terms)
    assert sorted(terms) == ["masked_reconstruction/a", "masked_reconstruction/b"]
    # By hand for domain b: its crops blanked where masked (BatchNorm in inference mode, so
    # the pass over both domains' crops equals one over b's alone).
    images = model.preprocessor("b").normalize(batch["b"]["images"])
    masks = batch["b"]["image_mask"]
    seen = images * (1 - masks)
    predicted = model.reconstruct(model.encode(seen), (16, 32))
    error = np.mean((predicted.numpy() - images.numpy()) ** 2, axis=-1, keepdims=True)
    expected = (error * masks.numpy()).sum() / masks.numpy().sum()
    assert float(terms["masked_reconstruction/b"]) == pytest.approx(expected, rel=1e-4)
    trained = model.encoder.trainable_variables + model.reconstruction_head.trainable_variables
    untouched = model.embedding.trainable_variables + [
        v for d in model.domains for v in model.decoder(d).trainable_variables]
    gradients = tape.gradient(total, trained + untouched)
    assert all(g is not None for g in gradients[: len(trained)])
    assert all(g is None for g in gradients[len(trained):]) and untouched
    del batch["a"]["image_mask"]
    with pytest.raises(ValueError, match="'image_mask'"):
        objective.terms(model, batch)


def test_the_auxiliary_reconstruction_is_the_masked_error_on_the_unlabelled_crops():
    model = UniversalSegmenter({"a": 3, "b": 4}, width=0.125, depth=0.25, embedding_dim=8,
                               centroids_per_class=2, reconstruction=True)
    model.build()
    rng = np.random.default_rng(1)
    # The masked stage's crops and masks as the unlabelled stream.
    masked = _masked_batch(model, rng)
    batch = {
        d: {"images": tf.constant(rng.uniform(0, 255, (2, 16, 32, 3)), tf.float32),
            "labels": tf.constant(rng.integers(0, c, (2, 16, 32)), tf.int32),
            "unlabeled": masked[d]["images"], "unlabeled_mask": masked[d]["image_mask"]}
        for d, c in model.domains.items()
    }
    objective = Objective({"supervised": 1.0, "masked_auxiliary": 0.5}, num_domains=2)
    assert objective.uses_unlabeled and not objective.uses_embedding
    terms = objective.terms(model, batch, training=False)
    assert sorted(terms) == ["masked_auxiliary/a", "masked_auxiliary/b", "supervised/a", "supervised/b"]
    images = model.preprocessor("a").normalize(batch["a"]["unlabeled"])
    masks = batch["a"]["unlabeled_mask"].numpy()
    predicted = model.reconstruct_masked(images, masks).numpy()
    expected = ((np.mean((predicted - images.numpy()) ** 2, -1, keepdims=True) * masks).sum() / masks.sum())
    assert float(terms["masked_auxiliary/a"]) == pytest.approx(expected, rel=1e-4)
    assert float(objective.total(terms)) == pytest.approx(
        sum(float(terms[f"supervised/{d}"]) + 0.5 * float(terms[f"masked_auxiliary/{d}"]) for d in "ab"),
        rel=1e-6)
    del batch["b"]["unlabeled_mask"]
    with pytest.raises(ValueError, match="'unlabeled_mask'"):
        objective.terms(model, batch)


def test_each_decoder_learns_from_the_other_domains_labels_through_the_correspondence():
    model = UniversalSegmenter({"a": 3, "b": 4}, width=0.125, depth=0.25, embedding_dim=8,
                               centroids_per_class=2)
    model.build()
    rng = np.random.default_rng(2)
    batch = {d: {"images": tf.constant(rng.uniform(0, 255, (2, 16, 32, 3)), tf.float32),
                 "labels": tf.constant(rng.integers(0, c, (2, 16, 32)), tf.int32)}
             for d, c in model.domains.items()}
    # a's class 1 is b's 1 or 2; a's 2 has no counterpart. Only a -> b here.
    label_sets = {("a", "b"): np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
                                       np.float32)}
    objective = Objective({"supervised": 1.0, "cross_domain_supervision": 0.5}, num_domains=2,
                          label_sets=label_sets)
    terms = objective.terms(model, batch, training=False)
    assert sorted(terms) == ["cross_domain_supervision/b", "supervised/a", "supervised/b"]
    logits = model.decode(model.encode(model.preprocessor("a").normalize(batch["a"]["images"]),
                                      training=False), "b", (16, 32))
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()
    labels = batch["a"]["labels"].numpy()
    admitted = label_sets[("a", "b")][labels]
    counted = admitted.any(-1)
    expected = -np.log((probabilities * admitted).sum(-1)[counted]).mean()
    assert float(terms["cross_domain_supervision/b"]) == pytest.approx(expected, rel=1e-4)
    assert float(objective.total(terms)) == pytest.approx(
        float(terms["supervised/a"]) + float(terms["supervised/b"])
        + 0.5 * float(terms["cross_domain_supervision/b"]), rel=1e-6)
    # In b's colours (data.augment.cross_domain_colour): the same term on a's crops
    # with each channel's labelled-pixel mean and std matched to b's crops.
    coloured = Objective({"supervised": 1.0, "cross_domain_supervision": 0.5}, num_domains=2,
                         label_sets=label_sets, cross_domain_colour=True)
    coloured_terms = coloured.terms(model, batch, training=False)
    assert sorted(coloured_terms) == sorted(terms)
    assert float(coloured_terms["supervised/a"]) == float(terms["supervised/a"])
    images = colour_transfer.match_colours(
        batch["a"]["images"], colour_transfer.channel_moments(batch["a"]["images"], batch["a"]["labels"]),
        colour_transfer.channel_moments(batch["b"]["images"], batch["b"]["labels"]))
    logits = model.decode(model.encode(model.preprocessor("b").normalize(images), training=False),
                          "b", (16, 32))
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()
    expected_coloured = -np.log((probabilities * admitted).sum(-1)[counted]).mean()
    assert float(coloured_terms["cross_domain_supervision/b"]) == pytest.approx(expected_coloured, rel=1e-4)
    assert abs(expected_coloured - expected) > 1e-3  # The colours changed what the decoder sees.
    # Without a pair of corresponding domains there is nothing to train.
    alone = Objective({"supervised": 1.0, "cross_domain_supervision": 0.5}, num_domains=2)
    assert sorted(alone.terms(model, batch, training=False)) == ["supervised/a", "supervised/b"]
    # Every stage with the supervised loss trains it; the masked stage does not.
    loss = config_lib.LossConfig(within_entropy=0.1, cross_entropy=0.1, embedding_supervision=1.0,
                                 cross_domain_supervision=0.5)
    for name in ("univ_basic", "univ_paper", "univ_full", "finetune"):
        for stage in method.plan(name):
            if not stage.fits_centroids:
                weights = method.loss_weights(loss, stage)
                assert weights.get("cross_domain_supervision", 0.0) == (
                    0.0 if stage.masked_modelling else 0.5), (name, stage.name)
