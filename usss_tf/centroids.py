"""Stage 2: label centroids in a shared embedding space.

Encoder features of labelled pixels (subsampled per class) -> PCA to d
dimensions, shared by all domains -> k-means with K clusters per class ->
unit-norm centroids M_d. The embedding head is initialised from the PCA, so
stage 3 starts in the space the centroids were fitted in.

PCA and k-means come from scikit-learn: well kept, seeded, with k-means++
initialisation and several restarts, which is what this stage needs and
nothing more.
"""

import numpy as np
import tensorflow as tf
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from usss_tf.domains import IGNORE_LABEL


def collect_features(model, dataset, domain, num_classes, pixels_per_class, seed):
    """Encoder features of up to ``pixels_per_class`` labelled pixels per class.

    Labels are resized (nearest) onto the stride-8 feature grid.

    Args:
      dataset: batches ``{domain: {"images", "labels"}}`` (see ``eval_dataset``).
    Returns:
      (features float32 [N, F], labels int32 [N]).
    """

    @tf.function(autograph=False)  # Plain TF ops: autograph would only add trace time.
    def encode(images, labels):
        features = model.features(images, domain, training=False)
        grid = tf.image.resize(labels[..., None], tf.shape(features)[1:3], method="nearest")
        return features, grid[..., 0]

    features_per_class = [[] for _ in range(num_classes)]
    for batch in dataset:
        features, labels = encode(batch[domain]["images"], batch[domain]["labels"])
        features = features.numpy().reshape(-1, features.shape[-1])
        labels = labels.numpy().reshape(-1)
        for c in np.unique(labels):
            if c == IGNORE_LABEL or c >= num_classes:
                continue
            features_per_class[c].append(features[labels == c])
    rng = np.random.default_rng(seed)
    all_features, all_labels = [], []
    for c, chunks in enumerate(features_per_class):
        if not chunks:
            continue
        pixels = np.concatenate(chunks)
        if len(pixels) > pixels_per_class:
            pixels = pixels[rng.choice(len(pixels), pixels_per_class, replace=False)]
        all_features.append(pixels)
        all_labels.append(np.full(len(pixels), c, np.int32))
    if not all_features:
        return np.zeros((0, model.encoder.output.shape[-1]), np.float32), np.zeros((0,), np.int32)
    return np.concatenate(all_features).astype(np.float32), np.concatenate(all_labels)


def fit_projection(features, dim, seed):
    """PCA of the pooled features -> (kernel [F, dim], bias [dim]) of ``x @ k + b``.

    When ``dim`` exceeds what the data supports (narrow backbones, few pixels)
    the missing columns are zero.
    """
    num_features = features.shape[1]
    components = min(dim, num_features, len(features))
    pca = PCA(n_components=components, random_state=seed).fit(features)
    kernel = np.zeros((num_features, dim), np.float32)
    kernel[:, :components] = pca.components_.T
    bias = -pca.mean_.astype(np.float32) @ kernel
    return kernel, bias


def fit_class_centroids(embeddings, labels, num_classes, centroids_per_class, seed, fallback=None):
    """K-means with K clusters per class on unit-norm embeddings -> [C, K, d] unit centroids.

    A class with fewer than K pixels repeats its points; a class with none keeps
    ``fallback[c]`` (the current centroids) and is reported in ``missing``.
    """
    dim = embeddings.shape[1]
    centroids = np.zeros((num_classes, centroids_per_class, dim), np.float32)
    if fallback is not None:
        centroids[:] = fallback
    counts, missing = [], []
    for c in range(num_classes):
        points = embeddings[labels == c]
        counts.append(int(len(points)))
        if len(points) == 0:
            missing.append(c)
            continue
        k = min(centroids_per_class, len(np.unique(points, axis=0)))
        kmeans = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(points)
        centers = kmeans.cluster_centers_
        centroids[c] = centers[np.arange(centroids_per_class) % k]
    norms = np.linalg.norm(centroids, axis=-1, keepdims=True)
    return centroids / np.maximum(norms, 1e-12), {"pixels_per_class": counts, "missing": missing}


def _normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def initialize_entropy_module(model, datasets, pixels_per_class, seed, fit_projection_too=True):
    """Runs stage 2 on ``model`` in place.

    Args:
      datasets: domain -> labelled batches ``{domain: {"images", "labels"}}``.
      fit_projection_too: refit the PCA projection (stage 2). A centroid
        refresh during stage 3 keeps the trained embedding head and only
        re-clusters its output.
    Returns:
      a report per domain: pixels per class and classes without pixels.
    """
    collected = {}
    for domain, dataset in datasets.items():
        collected[domain] = collect_features(
            model, dataset, domain, model.domains[domain], pixels_per_class, seed
        )
    pooled = np.concatenate([f for f, _ in collected.values()])
    if len(pooled) == 0:
        raise ValueError("no labelled pixel found to fit label centroids")
    if fit_projection_too:
        kernel, bias = fit_projection(pooled, model.embedding_dim, seed)
        model.embedding.set_projection(kernel, bias)
    else:
        kernel = np.asarray(model.embedding.projection.kernel).reshape(-1, model.embedding_dim)
        bias = np.asarray(model.embedding.projection.bias)
    report = {}
    for domain, (features, labels) in collected.items():
        embeddings = _normalize(features @ kernel + bias)
        layer = model.label_centroids(domain)
        centroids, info = fit_class_centroids(
            embeddings, labels, model.domains[domain], model.centroids_per_class, seed,
            fallback=np.asarray(layer.centroids),
        )
        layer.set_centroids(centroids)
        report[domain] = info
    return report
