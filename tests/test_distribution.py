"""MirroredStrategy over two logical CPU devices equals one device on the same global batch.

Logical devices must be configured before TensorFlow initialises, so the
comparison runs in a fresh interpreter. The encoder is a narrow DRN-D-22:
with ERFNet one and two replicas differ by ~1e-3 of the update after one
step of the supervised loss, and by ~2% with the consistency terms, which
amplify it (the known ERFNet drift, README "Scaling out"; not the loss terms:
DRN-D agrees to 2e-5 with every term on).
"""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from usss_tf.config import ConsistencyConfig
    from usss_tf.method import Objective
    from usss_tf.model.segmenter import UniversalSegmenter

    domains = {"a": 3, "b": 4}
    rng = np.random.default_rng(0)
    batch = {}
    for name, classes in domains.items():
        batch[name] = {
            "images": rng.uniform(0, 255, (4, 32, 48, 3)).astype("float32"),
            "labels": rng.integers(0, classes, (4, 32, 48)).astype("int32"),
            "unlabeled": rng.uniform(0, 255, (4, 32, 48, 3)).astype("float32"),
            "unlabeled_strong": rng.uniform(0, 255, (4, 32, 48, 3)).astype("float32"),
            "cutmix_box": np.zeros((4, 32, 48), "float32"),
            "unlabeled_valid": np.ones((4, 32, 48), "float32"),
            "unlabeled_seed": rng.integers(0, 1000, (4, 2)).astype("int64"),
        }
        batch[name]["cutmix_box"][[0, 3], 4:20, 10:30] = 1
        batch[name]["unlabeled_valid"][1:3, :, 40:] = 0
    # Replica 0 gets images 0-1, most of whose pixels are ignored: the global
    # masked cross-entropy is not the mean of the replicas' means.
    batch["a"]["labels"][:2, :, 8:] = 255
    # What the input pipeline adds by default, on the global batch: the copy-paste view of
    # the unlabelled crops and the labelled set's class frequency for distribution
    # alignment (one row per labelled crop). Not the copy-paste between labelled crops:
    # with those labels, two replicas differ from one device by 0.14% of the largest update
    # here, over this test's bound (an open problem, README "Scaling out").
    from usss_tf.data import copy_paste
    default_batch = {}
    for name, classes in domains.items():
        pasted, _, pasted_labels = copy_paste.paste_small_classes(
            batch[name]["images"], batch[name]["labels"], batch[name]["unlabeled"], classes)
        prior = np.linspace(1.0, 2.0, classes, dtype="float32")
        default_batch[name] = {**batch[name], "unlabeled_pasted": pasted.numpy(),
                               "pasted_labels": pasted_labels.numpy(),
                               "labelled_prior": np.tile(prior / prior.sum(), (4, 1))}
    # Every term, consistency included (distribution alignment sums over replicas;
    # CutMix partners 0-1 and 2-3 stay on one replica).
    every_term = {"supervised": 1, "within_entropy": 0.5, "cross_entropy": 0.5,
                  "embedding_supervision": 1, "consistency_strong": 0.5, "consistency_feature": 0.5}
    # univ_full's default terms: copy-paste on, the strong stream off (with both on,
    # two replicas do not equal one device: method.check_replicated refuses it).
    default_terms = {**every_term, "consistency_strong": 0.0, "consistency_paste": 0.5}
    every_term_consistency = ConsistencyConfig(threshold=0.3, alignment_target="batch")
    default_consistency = ConsistencyConfig(threshold=0.3)

    def one_step(strategy, weights, batch, consistency):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = UniversalSegmenter(domains, backbone="drn_d_22", width=0.125, embedding_dim=8,
                                       centroids_per_class=2, sync_batchnorm=True)
            model.build()
            model.objective = Objective(weights, num_domains=len(model.domains),
                                        consistency=consistency)
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        before = [w.numpy().copy() for w in model.trainable_weights]
        model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
        after = [w.numpy() for w in model.trainable_weights]
        return before, after, strategy.num_replicas_in_sync

    configurations = {
        "every_term": (every_term, batch, every_term_consistency),
        "default_terms": (default_terms, default_batch, default_consistency),
        # Copy-paste with neither alignment nor class-adaptive thresholds (allowed since
        # it was measured here in its own interpreter: 3e-5 of the update).
        "paste_plain_thresholds": (default_terms, default_batch, ConsistencyConfig(
            threshold=0.3, distribution_alignment=False, class_adaptive_threshold=False)),
    }
    weights, inputs, consistency = configurations[sys.argv[1]]
    b1, a1, r1 = one_step(tf.distribute.get_strategy(), weights, inputs, consistency)
    b2, a2, r2 = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), weights, inputs,
                          consistency)
    figures = {
        "replicas": [r1, r2],
        "same_start": max(float(np.abs(x - y).max()) for x, y in zip(b1, b2)),
        "change": float(sum(np.abs(x - y).sum() for x, y in zip(a1, b1))),
        "max_diff": max(float(np.abs(x - y).max()) for x, y in zip(a1, a2)),
        "max_update": max(float(np.abs(x - y).max()) for x, y in zip(a1, b1)),
    }
    print(json.dumps(figures))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("configuration", ["every_term", "default_terms", "paste_plain_thresholds"])
def test_two_replica_step_equals_single_device_step(configuration):
    # One configuration per interpreter: a second MirroredStrategy trained after
    # another configuration's in the same process was seen to stop with a
    # collective-op shape mismatch that no configuration shows on its own.
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, configuration], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["replicas"] == [1, 2]
    assert figures["same_start"] == 0.0
    assert figures["change"] > 0.0
    # Same update up to float reduction order, far below the update itself.
    assert figures["max_diff"] < 1e-3 * figures["max_update"] + 1e-6, figures
