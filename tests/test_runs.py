"""Loading a run directory back for inference."""

import numpy as np
import pytest

from usss_tf import runs
from usss_tf.errors import ConfigError


def test_load_run_restores_the_final_weights(tiny_run):
    loaded = runs.load_run(tiny_run)
    assert loaded.stage == "universal" and loaded.finished
    assert [d.name for d in loaded.domains] == ["synth_city", "synth_camvid"]
    again = runs.load_run(tiny_run)
    images = np.random.default_rng(0).integers(0, 255, (1, 32, 64, 3)).astype("float32")
    first, second = loaded.model(images), again.model(images)
    for name in first:
        np.testing.assert_allclose(first[name].numpy(), second[name].numpy(), atol=1e-5)
    # The restored weights are the trained ones, not a fresh initialisation.
    fresh = type(loaded.model).from_experiment(loaded.config)
    fresh.build()
    assert not np.allclose(fresh.decoder("synth_city").weights[0].numpy(),
                           loaded.model.decoder("synth_city").weights[0].numpy())


def test_not_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        runs.load_run(tmp_path)


def test_unknown_domain_is_named(tiny_run):
    loaded = runs.load_run(tiny_run)
    with pytest.raises(ConfigError, match="unknown domain 'mars'.*synth_city"):
        loaded.domain("mars")
