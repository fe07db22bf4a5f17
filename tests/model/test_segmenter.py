import keras
import numpy as np
import pytest
import tensorflow as tf

from usss_tf.method import Objective
from usss_tf.model.backbones import build_backbone
from usss_tf.model.segmenter import UniversalSegmenter

DOMAINS = {"a": 3, "b": 5}


def _model(**kwargs):
    kwargs.setdefault("width", 0.25)
    kwargs.setdefault("depth", 0.25)
    kwargs.setdefault("embedding_dim", 8)
    kwargs.setdefault("centroids_per_class", 2)
    model = UniversalSegmenter(DOMAINS, **kwargs)
    model.build()
    return model


@pytest.mark.parametrize("backbone", ["erfnet", "drn_d_22", "drn_d_38"])
def test_backbones_have_output_stride_8(backbone):
    encoder = build_backbone(backbone, width=0.125)
    features = encoder(tf.zeros([1, 64, 96, 3]))
    assert features.shape[1:3] == (8, 12)


@pytest.mark.parametrize("backbone, depth, blocks", [
    ("erfnet", 1.0, 13), ("erfnet", 0.2, 3), ("erfnet", 0.01, 2),
    ("drn_d_22", 1.0, 8), ("drn_d_22", 0.5, 4), ("drn_d_38", 0.5, 9)])
def test_depth_keeps_the_first_blocks_of_every_stage_and_the_stride(backbone, depth, blocks):
    encoder = build_backbone(backbone, width=0.125, depth=depth)
    # One Add per residual block (ERFNet's non-bottleneck-1d, DRN's stages 3-6).
    assert sum(isinstance(layer, keras.layers.Add) for layer in encoder.layers) == blocks
    assert encoder(tf.zeros([1, 64, 96, 3])).shape[1:3] == (8, 12)
    if backbone == "erfnet":  # Stage 3 keeps its first dilations: 2, then 4.
        assert encoder.get_layer("stage3_block0_conv1a").dilation_rate == (2, 1)
        if blocks > 2:
            assert encoder.get_layer("stage3_block1_conv1a").dilation_rate == (4, 1)


def test_a_shallow_model_saves_its_depth():
    model = _model(depth=0.25)
    clone = UniversalSegmenter.from_config(model.get_config())
    assert clone.depth == 0.25
    assert len(clone.encoder.layers) == len(model.encoder.layers) < len(_model(depth=1.0).encoder.layers)


def test_drn_d_22_has_the_papers_channels_at_full_width():
    encoder = build_backbone("drn_d_22")
    assert encoder.output.shape[-1] == 512
    assert 15e6 < encoder.count_params() < 17e6  # DRN-D-22 without its classifier: ~15.9M.


def test_call_returns_logits_per_domain_at_input_size():
    model = _model()
    outputs = model(tf.zeros([2, 40, 72, 3]))
    assert set(outputs) == {"a", "b"}
    assert outputs["a"].shape == (2, 40, 72, 3)
    assert outputs["b"].shape == (2, 40, 72, 5)


def test_centroids_are_non_trainable_weights_and_embeddings_unit_norm():
    model = _model()
    names = [w.path for w in model.non_trainable_weights]
    assert any("centroids_a" in n for n in names) and any("centroids_b" in n for n in names)
    assert not any("centroids" in w.path for w in model.trainable_weights)
    embeddings = model.embed(model.features(tf.random.uniform([1, 32, 32, 3], 0, 255), "a"))
    np.testing.assert_allclose(tf.norm(embeddings, axis=-1).numpy(), 1.0, rtol=1e-5)


def test_config_round_trip_rebuilds_the_same_architecture():
    model = _model(backbone="erfnet")
    clone = UniversalSegmenter.from_config(model.get_config())
    clone.build()
    assert clone.domains == model.domains
    assert clone.count_params() == model.count_params()
    clone.set_weights(model.get_weights())
    x = tf.random.uniform([1, 32, 48, 3], 0, 255)
    np.testing.assert_allclose(model(x)["b"].numpy(), clone(x)["b"].numpy(), atol=1e-5)


def _batch(rng, domains, size=(32, 64), n=2):
    batch = {}
    for name, classes in domains.items():
        labels = rng.integers(0, classes, (n, *size)).astype(np.int32)
        labels[:, :4] = 255
        batch[name] = {
            "images": tf.constant(rng.uniform(0, 255, (n, *size, 3)), tf.float32),
            "labels": tf.constant(labels),
            "unlabeled": tf.constant(rng.uniform(0, 255, (n, *size, 3)), tf.float32),
        }
    return batch


@pytest.mark.slow
def test_full_train_step_reports_every_term_and_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = _model()
    weights = {"supervised": 1, "within_entropy": 0.1, "cross_entropy": 0.1, "embedding_supervision": 1}
    model.objective = Objective(weights, num_domains=len(model.domains))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    batch = _batch(np.random.default_rng(0), DOMAINS)
    step = tf.function(model.train_step)
    first = step(batch)
    for term in weights:
        for domain in DOMAINS:
            assert f"{term}/{domain}" in first
    for _ in range(15):
        last = step(batch)
    assert float(last["loss"]) < float(first["loss"])
    centroids_before = model.label_centroids("a").centroids.numpy().copy()
    step(batch)
    np.testing.assert_array_equal(model.label_centroids("a").centroids.numpy(), centroids_before)


def test_supervised_only_step_skips_the_embedding_branch():
    model = _model()
    model.objective = Objective({"supervised": 1}, num_domains=len(model.domains))
    model.compile(optimizer="sgd")
    logs = model.train_step(_batch(np.random.default_rng(1), DOMAINS))
    assert sorted(logs) == ["learning_rate", "loss", "supervised/a", "supervised/b"]


def test_single_domain_model_has_no_cross_domain_term():
    model = UniversalSegmenter({"only": 4}, width=0.25, embedding_dim=8)
    model.build()
    model.objective = Objective({"cross_entropy": 1, "within_entropy": 1}, num_domains=len(model.domains))
    model.compile(optimizer="sgd")
    logs = model.train_step(_batch(np.random.default_rng(2), {"only": 4}))
    assert "within_entropy/only" in logs and "cross_entropy/only" not in logs


def test_inference_path_applies_each_domains_scale():
    model = _model(scales={"a": 0.5})
    assert model.scales == {"a": 0.5, "b": 1.0}
    images = tf.random.uniform([2, 40, 72, 3], 0, 255, seed=1)
    # By hand: resize to the domain's scale, normalise, encode, decode at the input size.
    half = tf.image.resize(images, (20, 36), method="bilinear")
    features = model.encode(model.preprocessor("a").normalize(half))
    expected = model.decode(features, "a", (40, 72))
    logits = model.domain_logits(images, "a")
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model(images)["a"].numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    # Domain b is seen at full resolution: not the same features.
    full = model.decode(model.encode(model.preprocessor("b")(images)), "b", (40, 72))
    np.testing.assert_allclose(model(images)["b"].numpy(), full.numpy(), rtol=1e-5, atol=1e-5)
    segmented = model.segment(images, "a", output_size=(10, 18))
    assert segmented["class_ids"].dtype == tf.uint8 and segmented["class_ids"].shape == (2, 10, 18)
    assert segmented["probabilities"].shape == (2, 10, 18, 3)
    np.testing.assert_array_equal(
        segmented["class_ids"].numpy(),
        np.argmax(model.domain_logits(images, "a", (10, 18)).numpy(), -1),
    )


def test_nearest_classes_label_an_image_in_every_label_space():
    model = _model(scales={"b": 0.5})
    images = tf.random.uniform([1, 32, 48, 3], 0, 255, seed=2)
    outputs = model.nearest_classes(images, "b")
    assert outputs["embeddings"].shape == (1, 2, 3, 8)  # stride 8 of the 16x24 scaled image
    assert outputs["nearest_class_a"].shape == outputs["nearest_class_b"].shape == (1, 32, 48)
    assert int(tf.reduce_max(outputs["nearest_class_a"])) < 3


def test_scales_survive_the_config_round_trip_and_unknown_domains_fail():
    model = _model(scales={"a": 0.75})
    clone = UniversalSegmenter.from_config(model.get_config())
    assert clone.scales == {"a": 0.75, "b": 1.0}
    with pytest.raises(ValueError, match="unknown domain"):
        UniversalSegmenter(DOMAINS, width=0.25, scales={"c": 0.5})
