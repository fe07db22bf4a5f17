import numpy as np
import pytest
import tensorflow as tf

from usss_tf.model.heads import DomainDecoder, EmbeddingHead, LabelCentroids


def test_decoder_gives_float32_logits_per_class_and_round_trips_its_config():
    decoder = DomainDecoder(5, name="decoder_x")
    logits = decoder(tf.zeros([2, 3, 4, 16]))
    assert logits.shape == (2, 3, 4, 5) and logits.dtype == tf.float32
    assert DomainDecoder.from_config(decoder.get_config()).num_classes == 5


def test_embedding_is_unit_norm_and_takes_a_projection():
    head = EmbeddingHead(4)
    features = tf.random.normal([1, 2, 3, 6], seed=1)
    np.testing.assert_allclose(tf.norm(head(features), axis=-1).numpy(), 1.0, rtol=1e-5)
    kernel = np.zeros((6, 4), np.float32)
    kernel[0, 0] = 1.0
    head.set_projection(kernel, np.zeros(4, np.float32))
    expected = np.sign(features.numpy()[..., :1]) * np.eye(4, dtype=np.float32)[0]
    np.testing.assert_allclose(head(features).numpy(), expected, atol=1e-5)
    assert EmbeddingHead.from_config(head.get_config()).dim == 4


def test_centroid_logits_are_the_best_centroid_per_class_over_temperature():
    layer = LabelCentroids(num_classes=2, centroids_per_class=2, dim=2, temperature=0.5)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 1
    layer.set_centroids([[[1, 0], [0, 3]], [[-1, 0], [0, -1]]])  # Normalised on the way in.
    embedding = np.array([[0.6, 0.8]], np.float32)
    logits = layer(embedding).numpy()
    # Class 0: max(0.6, 0.8) / 0.5; class 1: max(-0.6, -0.8) / 0.5.
    np.testing.assert_allclose(logits, [[1.6, -1.2]], rtol=1e-6)
    clone = LabelCentroids.from_config(layer.get_config())
    assert (clone.num_classes, clone.centroids_per_class, clone.dim, clone.temperature) == (2, 2, 2, 0.5)
    with pytest.raises(ValueError):
        layer.set_centroids(np.zeros((3, 2, 2)))
