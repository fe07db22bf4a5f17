"""The baselines next to the universal model: ``supervised`` and ``finetune``."""

import json

import numpy as np
import pytest
import tensorflow as tf

from usss_tf import evaluate, export, runs
from usss_tf.serving import contract
from usss_tf.config import config_from_dict
from usss_tf.errors import ConfigError

pytestmark = pytest.mark.slow


def _weights(run_dir, checkpoint):
    """Every weight of the run's model restored from ``checkpoint``, by layer path."""
    model = runs.load_run(run_dir).model
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    return {
        "decoder": [w.numpy() for w in model.decoder("synth_city").weights],
        "encoder": [w.numpy() for w in model.encoder.trainable_weights],
    }


def test_finetune_trains_the_source_then_only_the_target(tmp_path, train_tiny):
    run_dir = train_tiny(tmp_path, method="finetune")
    stages = json.loads((run_dir / "stages.json").read_text())
    assert list(stages) == ["source", "target"]
    source = tf.train.latest_checkpoint(str(run_dir / "checkpoints" / "source"))
    target = tf.train.latest_checkpoint(str(run_dir / "checkpoints" / "target"))
    # No gradient reaches the first domain's decoder during fine-tuning; the
    # shared encoder moves on to the target domain.
    before, after = _weights(run_dir, source), _weights(run_dir, target)
    assert all(np.array_equal(a, b) for a, b in zip(before["decoder"], after["decoder"]))
    assert any(not np.array_equal(a, b) for a, b in zip(before["encoder"], after["encoder"]))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"synth_city", "synth_camvid"}
    assert runs.load_run(run_dir).stage == "target"
    # No centroids were fitted: the export has no 'embed' signature to serve random ones.
    exported = export.export_run(run_dir, model_base=tmp_path / "models" / "usss")
    signatures = set(tf.saved_model.load(str(exported)).signatures)
    assert signatures == set(contract.signature_names(["synth_city", "synth_camvid"], with_embedding=False))


def test_supervised_trains_one_model_per_domain_on_the_same_labelled_draw(tmp_path, tiny_run, train_tiny):
    run_dir = train_tiny(tmp_path, method="supervised")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"synth_city", "synth_camvid"}
    universal_manifest = json.loads((tiny_run / "manifest.json").read_text())
    for domain in ("synth_city", "synth_camvid"):
        sub = run_dir / "supervised" / domain
        loaded = runs.load_run(sub)
        assert loaded.model.domain_names == [domain]
        assert loaded.config.method == "univ_basic"
        assert loaded.config.train.pretrain_steps == 6 and loaded.config.train.steps == 0
        manifest = json.loads((sub / "manifest.json").read_text())
        assert manifest[domain]["labeled"] == universal_manifest[domain]["labeled"]
    with pytest.raises(ConfigError, match="one model per domain"):
        runs.load_run(run_dir)
    figures = evaluate.evaluate_run(run_dir)
    assert set(figures) == {"synth_city", "synth_camvid"}
    assert json.loads((run_dir / "run.json").read_text())["seed"] == 0


def test_finetune_needs_two_domains():
    with pytest.raises(ConfigError, match="'method'.*two domains"):
        config_from_dict({"method": "finetune", "domains": [{"name": "camvid", "root": "x"}]})
