"""The label centroids of every domain in TensorBoard's embedding projector.

Keras's ``TensorBoard(embeddings_freq=...)`` only knows ``Embedding`` layers;
the centroids here are non-trainable weights of ``LabelCentroids`` layers,
one ``[C_d, K, d]`` tensor per domain. ``write_centroid_projector`` stacks them
into one ``[sum_d C_d * K, d]`` matrix and writes, into a TensorBoard log
directory (the run's ``tensorboard/``):

* ``centroids-<step>.index/.data-*`` + ``checkpoint``: a checkpoint holding
  the matrix as the variable ``label_centroids`` (the projector finds the
  latest checkpoint of the directory, so the files can move with the run);
* ``metadata.tsv``: one row per centroid, columns ``domain``, ``class``,
  ``centroid`` (the index k), so the projector can colour and label points
  by domain or by class;
* ``projector_config.pbtxt``: the ``ProjectorConfig`` tying the two together.

Because all domains share one embedding space, the projector shows which
classes of different label spaces sit together (a "car" centroid of one
domain next to the "vehicle" centroids of another).
"""

import pathlib

import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector

from usss_tf.run_dir import write_text_atomic

TENSOR_NAME = "label_centroids/.ATTRIBUTES/VARIABLE_VALUE"
METADATA_FILE = "metadata.tsv"
CHECKPOINT_NAME = "centroids"


def centroid_table(model, domains):
    """All centroids as rows: (``float32 [N, d]`` unit vectors, ``[(domain, class, k)]``).

    Args:
      model: a built ``UniversalSegmenter``.
      domains: the run's ``Domain`` objects in the model's order (for class names).
    """
    vectors, rows = [], []
    for domain in domains:
        centroids = np.asarray(model.label_centroids(domain.name).centroids, np.float32)
        num_classes, per_class, dim = centroids.shape
        norms = np.linalg.norm(centroids, axis=-1, keepdims=True)
        vectors.append((centroids / np.maximum(norms, 1e-12)).reshape(-1, dim))
        rows += [(domain.name, domain.class_names[c], k) for c in range(num_classes) for k in range(per_class)]
    return np.concatenate(vectors), rows


def _tsv_field(text):
    return str(text).replace("\t", " ").replace("\n", " ")


def write_centroid_projector(log_dir, model, domains, step):
    """Writes the centroids checkpoint, ``metadata.tsv`` and the projector config into ``log_dir``.

    Called again (a later stage, the end of the run), it replaces the
    previous checkpoint, so the projector always shows the latest centroids.
    Returns the checkpoint path.
    """
    log_dir = pathlib.Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    matrix, rows = centroid_table(model, domains)
    with tf.device("/cpu:0"):
        variable = tf.Variable(matrix, trainable=False, name="label_centroids")
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(label_centroids=variable), str(log_dir), max_to_keep=1,
        checkpoint_name=CHECKPOINT_NAME,
    )
    path = manager.save(checkpoint_number=int(step))

    lines = ["domain\tclass\tcentroid"] + [
        f"{_tsv_field(d)}\t{_tsv_field(c)}\t{k}" for d, c, k in rows
    ]
    write_text_atomic(log_dir / METADATA_FILE, "\n".join(lines) + "\n")

    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = TENSOR_NAME
    embedding.metadata_path = METADATA_FILE
    # No model_checkpoint_path: the projector takes the directory's latest
    # checkpoint, which keeps the run directory relocatable.
    projector.visualize_embeddings(str(log_dir), config)
    return path
