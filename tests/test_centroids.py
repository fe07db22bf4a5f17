import numpy as np

from usss_tf import centroids


def _clusters(rng, centers, n):
    points = np.concatenate([c + 0.02 * rng.standard_normal((n, len(c))) for c in centers])
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def test_kmeans_per_class_recovers_known_clusters():
    rng = np.random.default_rng(0)
    eye = np.eye(4)
    class0 = _clusters(rng, [eye[0], eye[1]], 50)
    class1 = _clusters(rng, [eye[2], eye[3]], 50)
    embeddings = np.concatenate([class0, class1]).astype(np.float32)
    labels = np.array([0] * 100 + [1] * 100)
    found, info = centroids.fit_class_centroids(embeddings, labels, 2, 2, seed=0)
    assert found.shape == (2, 2, 4)
    for c, expected in ((0, [eye[0], eye[1]]), (1, [eye[2], eye[3]])):
        for center in expected:
            assert np.max(found[c] @ center) > 0.99
    assert info["pixels_per_class"] == [100, 100] and info["missing"] == []


def test_missing_class_keeps_fallback_and_small_class_repeats_points():
    embeddings = np.array([[1.0, 0.0]], np.float32)
    labels = np.array([0])
    fallback = np.array([[[0.0, 1.0], [0.0, 1.0]], [[0.0, -1.0], [0.0, -1.0]]], np.float32)
    found, info = centroids.fit_class_centroids(embeddings, labels, 2, 2, 0, fallback=fallback)
    np.testing.assert_allclose(found[0], [[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(found[1], fallback[1])
    assert info["missing"] == [1]


def test_projection_is_the_pca_of_the_features():
    rng = np.random.default_rng(1)
    # Variance lives in the first two of five dimensions.
    features = np.zeros((400, 5), np.float32)
    features[:, 0] = 3.0 * rng.standard_normal(400) + 10.0
    features[:, 1] = 1.0 * rng.standard_normal(400) - 4.0
    kernel, bias = centroids.fit_projection(features, dim=3, seed=0)
    projected = features @ kernel + bias
    np.testing.assert_allclose(projected.mean(0)[:2], 0.0, atol=1e-4)
    assert abs(kernel[0, 0]) > 0.99 and abs(kernel[1, 1]) > 0.99
    # Only 5 feature dimensions exist, 3 were asked for: all filled; a wider ask pads zeros.
    wide_kernel, _ = centroids.fit_projection(features, dim=8, seed=0)
    assert np.all(wide_kernel[:, 5:] == 0)
