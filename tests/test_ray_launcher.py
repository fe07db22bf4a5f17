"""``usss-tf train --ray-workers 2``: Ray Train's TensorflowTrainer sets TF_CONFIG, our
multi-worker path trains, the chief writes the run directory.

Opt-in (``USSS_TEST_RAY=1``, with ``pip install 'usss-tf[ray]'``): Ray is a
240 MB install, the test takes ~2 minutes, and under the full suite's load on
2 cores Ray's own start-up (its GCS server) once timed out. Run it alone:
``USSS_TEST_RAY=1 .venv/bin/python -m pytest tests/test_ray_launcher.py``.
"""

import json
import os

import pytest
import yaml

if not os.environ.get("USSS_TEST_RAY"):
    pytest.skip("Ray launcher test is opt-in: set USSS_TEST_RAY=1", allow_module_level=True)
ray = pytest.importorskip("ray")

from usss_tf import ray_launcher, runs  # noqa: E402
from usss_tf.data import synthetic  # noqa: E402

from test_multi_worker import TINY  # noqa: E402


@pytest.mark.slow
def test_two_ray_workers_train_a_tiny_config(tmp_path):
    roots = synthetic.write_synthetic_domains(
        tmp_path / "data", ("synth_city", "synth_camvid"), num_train=8, num_val=3, size=(32, 64), seed=0)
    config = {**TINY, "name": "ray_tiny", "domains": [
        {"name": name, "root": str(root), "labeled": 4} for name, root in roots.items()]}
    config["train"] = {**TINY["train"], "pretrain_steps": 1, "steps": 1, "checkpoint_every": 1}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        results = ray_launcher.train_on_ray(path, [], tmp_path / "run", num_workers=2,
                                            worker_timeout=120)
    finally:
        ray.shutdown()
    assert set(results) == {"synth_city", "synth_camvid"}
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["workers"] == 2 and info["replicas"] == 2
    run = runs.load_run(tmp_path / "run")
    assert run.finished
    figures = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert figures == results
