"""Mixed precision: the config switch, float32 losses, float32 variables, the policy restored."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from usss_tf import config as config_lib
from usss_tf import precision
from usss_tf.errors import ConfigError
from usss_tf.method import Objective
from usss_tf.model.segmenter import UniversalSegmenter

ALL_LOSSES = {"supervised": 1, "within_entropy": 0.1, "cross_entropy": 0.1, "embedding_supervision": 1}


def _config(policy):
    return config_lib.config_from_dict({
        "method": "univ_full",
        "domains": [{"name": "synth_city", "root": "/nowhere"}, {"name": "synth_camvid", "root": "/nowhere"}],
        "model": {"width": 0.125, "depth": 0.25, "embedding_dim": 8, "centroids_per_class": 2},
        "train": {"precision": policy},
    })


def _batch(model, size=(16, 32), batch=2):
    rng = np.random.default_rng(0)
    return {
        d: {
            "images": tf.constant(rng.uniform(0, 255, (batch, *size, 3)), tf.float32),
            "labels": tf.constant(rng.integers(0, c, (batch, *size)), tf.int32),
            "unlabeled": tf.constant(rng.uniform(0, 255, (batch, *size, 3)), tf.float32),
        }
        for d, c in model.domains.items()
    }


def test_unknown_precision_names_the_key():
    with pytest.raises(ConfigError, match=r"key 'train.precision'.*mixed_bfloat16"):
        _config("float8")


def test_policy_is_restored_after_the_block():
    before = keras.config.dtype_policy().name
    with precision.dtype_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before
    with pytest.raises(RuntimeError):
        with precision.dtype_policy("mixed_bfloat16"):
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == before


@pytest.mark.slow
def test_mixed_bfloat16_train_step_has_float32_losses_and_variables():
    model = UniversalSegmenter.from_experiment(_config("mixed_bfloat16"))
    assert keras.config.dtype_policy().name == "float32"  # construction does not leak the policy
    model.build()
    model.objective = Objective(ALL_LOSSES, num_domains=len(model.domains))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    assert model.encoder.layers[1].compute_dtype == "bfloat16"
    assert model.label_centroids("synth_city").compute_dtype == "float32"
    assert all(v.dtype == "float32" for v in model.weights)

    batch = _batch(model)
    features = model.encode(batch["synth_city"]["images"])
    assert features.dtype == tf.bfloat16  # the encoder really runs in bfloat16
    assert model.decode(features, "synth_city", (16, 32)).dtype == tf.float32
    embeddings = model.embed(features)
    assert embeddings.dtype == tf.float32
    assert model.similarity_logits(embeddings, "synth_camvid").dtype == tf.float32

    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = tf.function(model.train_step)(batch)
    for key, value in logs.items():
        assert value.dtype == tf.float32, key
        assert np.isfinite(value.numpy()), key
    assert {"supervised/synth_city", "within_entropy/synth_camvid", "cross_entropy/synth_city",
            "embedding_supervision/synth_camvid"} <= set(logs)
    assert all(v.dtype == "float32" for v in model.weights)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))


def test_mixed_float16_wraps_the_optimizer_in_loss_scaling():
    model = UniversalSegmenter.from_experiment(_config("mixed_float16"))
    model.build()
    model.objective = Objective({"supervised": 1}, num_domains=len(model.domains))
    model.compile(optimizer=keras.optimizers.SGD(1e-2))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    batch = _batch(model, batch=1)
    logs = tf.function(model.train_step)({d: {k: v for k, v in b.items() if k != "unlabeled"}
                                          for d, b in batch.items()})
    assert logs["loss"].dtype == tf.float32 and np.isfinite(logs["loss"].numpy())
    assert int(model.optimizer.iterations.numpy()) in (0, 1)  # a non-finite first step is skipped


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n\n")
    assert {"avx512f", "amx_bf16"} <= precision.cpu_flags(cpuinfo)
    assert precision.cpu_flags(tmp_path / "absent") == frozenset()


def test_auto_resolves_to_a_real_policy_that_matches_the_cpu():
    resolved = precision.resolve("auto")
    assert resolved in precision.POLICIES and resolved != "auto"
    if not tf.config.list_physical_devices("GPU"):
        has_bf16 = bool(set(precision.BF16_CPU_FLAGS) & precision.cpu_flags())
        assert resolved == ("mixed_bfloat16" if has_bf16 else "float32")
    assert precision.resolve("float32") == "float32"
    with precision.dtype_policy("auto"):
        assert keras.config.dtype_policy().name == resolved
