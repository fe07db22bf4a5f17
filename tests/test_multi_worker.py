"""Training on two workers from TF_CONFIG (two processes on 127.0.0.1) equals one process.

The same ``usss-tf train`` command runs in every worker; the global batch is
the config's batch (each worker takes its half of every step's examples),
BatchNorm is synchronised, and the chief alone writes the run directory.

The reference is one process with the same global batch on two replicas
(two logical CPUs): the same split of every batch, so the same arithmetic
(measured: bit-identical weights). A one-replica run equals two replicas
after one step (``test_distribution.py``) but drifts apart over several
steps of this tiny config; that is open (see benchmarks/README.md, "Scaling
out"), so it is not the reference here.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from usss_tf import cluster
from usss_tf.errors import ConfigError
from usss_tf.testing import free_ports

TINY = {
    "method": "univ_full", "seed": 0,
    "model": {"width": 0.125, "depth": 0.25, "embedding_dim": 8, "centroids_per_class": 2,
              "sync_batchnorm": True},
    "data": {"crop": [32, 64], "batch_size": 2, "unlabeled_batch_size": 2, "eval_batch_size": 4},
    # No masked or pretraining stage: the universal step has every loss term (the supervised
    # one included), and each stage costs every process of the test a trace.
    "loss": {"within_entropy": 0.1, "cross_entropy": 0.1, "embedding_supervision": 1.0,
             "consistency_feature": 0.25, "consistency_paste": 0.25, "masked_auxiliary": 0.5},
    "train": {"masked_steps": 0, "pretrain_steps": 0, "steps": 4, "checkpoint_every": 2, "log_every": 1,
              "verbose": 0, "optimizer": "sgd", "learning_rate": 0.01, "panel_images": 0},
}




def _tf_config(addresses, index):
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def _command(config, run_dir):
    return [sys.executable, "-m", "usss_tf.cli", "train", str(config), "--run-dir", str(run_dir),
            "--worker-timeout", "60"]


def _start_workers(config, run_dir, logs):
    addresses = [f"127.0.0.1:{p}" for p in free_ports(2)]
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": _tf_config(addresses, index), "TF_CPP_MIN_LOG_LEVEL": "2"}
        log = open(logs / f"worker{index}.log", "ab")
        workers.append(subprocess.Popen(_command(config, run_dir), env=env, stdout=log, stderr=log))
    return workers


def _wait(workers, logs, timeout=600):
    for index, worker in enumerate(workers):
        code = worker.wait(timeout=timeout)
        assert code == 0, (logs / f"worker{index}.log").read_text()[-3000:]


ONE_PROCESS_TWO_REPLICAS = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from usss_tf import config as config_lib, train
train.run_experiment(config_lib.load_config(sys.argv[1]), sys.argv[2], devices=2, echo=lambda *_: None)
"""


def _final_weights(run_dir):
    from usss_tf import runs

    return runs.load_run(run_dir).model.get_weights()


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    from usss_tf.data import synthetic

    base = tmp_path_factory.mktemp("multi_worker")
    roots = synthetic.write_synthetic_domains(
        base / "data", ("synth_city", "synth_camvid"), num_train=8, num_val=3, size=(32, 64), seed=0)
    config = {**TINY, "name": "two_workers", "domains": [
        {"name": name, "root": str(root), "labeled": 4, "scale": 1.0} for name, root in roots.items()]}
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow(seconds=160)
def test_two_workers_equal_one_process_and_resume_after_a_worker_dies(tiny_config, tmp_path):
    single = tmp_path / "single"
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    subprocess.run([sys.executable, "-c", ONE_PROCESS_TWO_REPLICAS, str(tiny_config), str(single)],
                   env=env, check=True, capture_output=True)

    # Two workers, killed after the first checkpoint, then re-run: they resume.
    two = tmp_path / "two"
    workers = _start_workers(tiny_config, two, tmp_path)
    # The checkpoint state file names ckpt-2 only once its files are complete.
    state = two / "checkpoints" / "universal" / "checkpoint"

    def first_checkpoint_written():
        return state.exists() and '"ckpt-2"' in state.read_text()

    deadline = time.monotonic() + 300
    while not first_checkpoint_written() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first_checkpoint_written(), (tmp_path / "worker0.log").read_text()[-3000:]
    # A node failure takes both (the survivor ending alone in bounded time is
    # test_an_unreachable_peer_ends_the_worker_in_bounded_time); re-running both resumes.
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=60)
    workers = _start_workers(tiny_config, two, tmp_path)
    _wait(workers, tmp_path)
    assert "resuming from step" in (tmp_path / "worker0.log").read_text()

    for a, b in zip(_final_weights(single), _final_weights(two)):
        # Same batches on the same replicas; only the all-reduce's summation order may differ.
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * max(1.0, float(np.abs(a).max())))
    info = json.loads((two / "run.json").read_text())
    assert info["workers"] == 2 and info["replicas"] == 2
    # Only the chief wrote TensorBoard data: one event file per writer.
    for folder in ("train", "validation"):
        events = sorted((two / "tensorboard" / folder).glob("events.out.tfevents.*"))
        assert len(events) == 2  # One per start of the chief (the first run and the resumed one).
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in single.iterdir())


def test_malformed_tf_config_names_the_field():
    with pytest.raises(ConfigError, match="TF_CONFIG: not valid JSON"):
        cluster.parse_tf_config("{cluster")
    with pytest.raises(ConfigError, match=r"'cluster.worker\[1\]': 'nohost' is not a host:port"):
        cluster.parse_tf_config(json.dumps({"cluster": {"worker": ["a:1", "nohost"]},
                                            "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ConfigError, match=r"'task.index': 2 is not an index of 'cluster.worker'"):
        cluster.parse_tf_config(_tf_config(["a:1", "b:2"], 2))
    with pytest.raises(ConfigError, match="parameter-server and evaluator tasks are not supported"):
        cluster.parse_tf_config(json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:2"]},
                                            "task": {"type": "worker", "index": 0}}))
    parsed = cluster.parse_tf_config(json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                                                 "task": {"type": "worker", "index": 0}}))
    assert parsed.num_workers == 2 and not parsed.is_chief and parsed.peers() == ["c:1"]
    assert cluster.cluster_from_environment({"TF_CONFIG": _tf_config(["a:1"], 0)}) is None
    assert cluster.cluster_from_environment({}) is None


def test_malformed_tf_config_stops_the_cli_with_one_line(tiny_config):
    env = {**os.environ, "TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1"]}}'}
    result = subprocess.run(_command(tiny_config, "/nonexistent/run"), env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: environment variable TF_CONFIG: 'cluster.worker[0]': '127.0.0.1' is not a "
        "host:port address")


def test_an_unreachable_peer_ends_the_worker_in_bounded_time(tiny_config, tmp_path):
    addresses = [f"127.0.0.1:{p}" for p in free_ports(2)]
    env = {**os.environ, "TF_CONFIG": _tf_config(addresses, 0)}
    command = _command(tiny_config, tmp_path / "run")
    command[-1] = "5"  # --worker-timeout 5
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert time.monotonic() - started < 90
    assert (f"connecting to the 2 workers of TF_CONFIG took longer than 5s; unreachable: "
            f"{addresses[1]}") in result.stderr
    assert not (tmp_path / "run").exists()
