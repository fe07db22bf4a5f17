"""MirroredStrategy over two logical CPU devices computes the step one device computes.

The reference is the same step on one device in float64: float32 on one
device is itself up to 1.4% of the update away from it with the
consistency terms (mostly oneDNN's kernels on the whole batch; 0.16% with
them off), while two float32 replicas agree with it to 2e-5 in every
configuration measured (docs/RESULTS.md, "Two replicas, one device and a
float64 reference"). The step starts from weights trained on one device
with the supervised loss, as the universal stage starts from the
pre-trained model. Logical devices must be configured before TensorFlow
initialises, so each configuration runs in a fresh interpreter. The encoder
is a narrow DRN-D-22 (with ERFNet one and two replicas differ by ~1e-3 of
the update after one supervised step, README "Scaling out").
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
    # What the input pipeline adds by default, on the global batch: copy-paste between
    # the labelled crops, the copy-paste view of the unlabelled crops and the labelled
    # set's class frequency for distribution alignment (one row per labelled crop).
    from usss_tf.data import copy_paste
    default_batch = {}
    for name, classes in domains.items():
        images, labels = (t.numpy() for t in copy_paste.paste_within_labelled(
            batch[name]["images"], batch[name]["labels"], classes))
        pasted, _, pasted_labels = copy_paste.paste_small_classes(
            images, labels, batch[name]["unlabeled"], classes)
        prior = np.linspace(1.0, 2.0, classes, dtype="float32")
        default_batch[name] = {**batch[name], "images": images, "labels": labels,
                               "unlabeled_pasted": pasted.numpy(),
                               "pasted_labels": pasted_labels.numpy(),
                               "labelled_prior": np.tile(prior / prior.sum(), (4, 1))}
    # Every term, consistency included (distribution alignment sums over replicas;
    # CutMix partners 0-1 and 2-3 stay on one replica).
    # a's class 1 is b's 1 or 2, a's 2 has no counterpart (the cross-domain term, in the
    # target's colours: their statistics sum over replicas).
    label_sets = {("a", "b"): np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
                                       "float32"),
                  ("b", "a"): np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]],
                                       "float32")}
    every_term = {"supervised": 1, "cross_domain_supervision": 0.5,
                  "within_entropy": 0.5, "cross_entropy": 0.5,
                  "embedding_supervision": 1, "consistency_strong": 0.5, "consistency_feature": 0.5}
    # The feature stream and copy-paste on, the strong stream off (univ_full's earlier defaults).
    default_terms = {**every_term, "consistency_strong": 0.0, "consistency_paste": 0.5}
    # The masked stage: replica 0's crops have fewer masked cells than replica 1's, so the
    # global mean over masked pixels is not the mean of the replicas' means.
    from usss_tf.data import masking
    masked_batch = {name: {"images": batch[name]["images"], "image_mask": np.stack([
        masking.patch_mask((32, 48), 8, ratio, [k, i]).numpy()
        for i, ratio in enumerate((0.2, 0.2, 0.7, 0.7))])} for k, name in enumerate(domains)}
    every_term_consistency = ConsistencyConfig(threshold=0.3, alignment_target="batch",
                                               class_adaptive_threshold=True)
    default_consistency = ConsistencyConfig(threshold=0.3)

    def segmenter():
        return UniversalSegmenter(domains, backbone="drn_d_22", width=0.125, embedding_dim=8,
                                  centroids_per_class=2, sync_batchnorm=True, reconstruction=True)

    def trained_start(batch, path):
        # Weights after 100 supervised steps on `batch`, one device.
        keras.utils.set_random_seed(0)
        model = segmenter()
        model.build()
        model.objective = Objective({"supervised": 1, "embedding_supervision": 1},
                                    num_domains=len(model.domains))
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.fit(tf.data.Dataset.from_tensors(batch).repeat(100), epochs=1, verbose=0, shuffle=False)
        model.save_weights(path)

    def one_step(strategy, weights, batch, consistency, start, dtype="float32"):
        # One SGD step from the weights in `start`, the model and images in `dtype`.
        keras.utils.set_random_seed(0)
        keras.config.set_dtype_policy(dtype)
        images = ("images", "unlabeled", "unlabeled_strong", "unlabeled_pasted")
        batch = {d: {k: v.astype(dtype) if k in images else v for k, v in x.items()}
                 for d, x in batch.items()}
        with strategy.scope():
            model = segmenter()
            model.build()
            model.load_weights(start)
            model.objective = Objective(weights, num_domains=len(model.domains),
                                        consistency=consistency, label_sets=label_sets,
                                        cross_domain_colour=sys.argv[1] == "colour_float64")
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        before = [w.numpy().copy() for w in model.trainable_weights]
        model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
        after = [w.numpy() for w in model.trainable_weights]
        return before, after, strategy.num_replicas_in_sync

    configurations = {
        "every_term": (every_term, batch, every_term_consistency),
        "masked": ({"supervised": 0, "masked_reconstruction": 1}, masked_batch, None),
        "strong_and_paste": ({**default_terms, "consistency_strong": 0.5}, default_batch,
                             default_consistency),
        "paste_plain_thresholds": (default_terms, default_batch, ConsistencyConfig(
            threshold=0.3, distribution_alignment=False, class_adaptive_threshold=False)),
    }
    # Every term, the cross-domain one in the target's colours (data.augment.cross_domain_colour,
    # statistics summed over replicas), two replicas in float64 as well: in float32 this step
    # is beyond the 0.1% bound below from the float64 device, on one replica as on two
    # (0.3-0.7% measured; its pseudo-label thresholds turn the colours' last bits into
    # other targets).
    configurations["colour_float64"] = configurations["every_term"]
    start = sys.argv[2]
    if sys.argv[1] == "start":
        trained_start(default_batch, start)
        sys.exit(0)
    weights, inputs, consistency = configurations[sys.argv[1]]
    b2, a2, r2 = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), weights, inputs,
                          consistency, start, dtype="float64" if sys.argv[1] == "colour_float64" else "float32")
    b1, a1, r1 = one_step(tf.distribute.get_strategy(), weights, inputs, consistency, start,
                          dtype="float64")
    figures = {
        "replicas": [r1, r2],
        "dtypes": [str(b1[0].dtype), str(b2[0].dtype)],
        "same_start": max(float(np.abs(x - y).max()) for x, y in zip(b1, b2)),
        "change": float(sum(np.abs(x - y).sum() for x, y in zip(a1, b1))),
        "max_diff": max(float(np.abs(x - y).max()) for x, y in zip(a1, a2)),
        "max_update": max(float(np.abs(x - y).max()) for x, y in zip(a1, b1)),
    }
    print(json.dumps(figures))
    """
)


def _run_script(*args):
    return subprocess.run([sys.executable, "-c", SCRIPT, *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="session")
def start_weights(tmp_path_factory):
    """The trained start every configuration steps from, once per pytest-xdist worker (not
    shared between workers: one would idle while the other trains it)."""
    path = tmp_path_factory.mktemp("two_replica_start") / "start.weights.h5"
    result = _run_script("start", path)
    assert result.returncode == 0, result.stderr[-3000:]
    return path


@pytest.mark.slow(seconds=50)
@pytest.mark.parametrize("configuration", ["every_term", "masked", "strong_and_paste",
                                           "paste_plain_thresholds", "colour_float64"])
def test_two_replica_step_equals_single_device_step(configuration, start_weights):
    # One configuration per interpreter: a second MirroredStrategy trained after
    # another configuration's in the same process was seen to stop with a
    # collective-op shape mismatch that no configuration shows on its own.
    result = _run_script(configuration, start_weights)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["replicas"] == [1, 2]
    assert figures["same_start"] == 0.0
    assert figures["change"] > 0.0
    if configuration == "colour_float64":
        assert figures["dtypes"] == ["float64", "float64"]
        assert figures["max_diff"] < 1e-9 * figures["max_update"], figures  # Measured 7e-15.
        return
    assert figures["dtypes"] == ["float64", "float32"]
    # Same update up to float32 rounding: measured 1e-5 of the update on a Zen 5; the bound leaves
    # room for other CPUs' kernels, and a replica taking its own loss mean gives 12-44%.
    assert figures["max_diff"] < 1e-3 * figures["max_update"], figures
