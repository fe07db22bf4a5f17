"""The ``usss-tf`` command line, end to end on tiny generated data."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml
from click.testing import CliRunner

from conftest import write_camvid_tree
from usss_tf import config as config_lib
from usss_tf import train as train_lib
from usss_tf.cli import main

TINY = {
    "name": "tiny",
    "method": "univ_full",
    "seed": 0,
    "model": {"width": 0.125, "depth": 0.25, "embedding_dim": 8, "centroids_per_class": 2},
    "data": {"crop": [32, 64], "batch_size": 2, "unlabeled_batch_size": 2, "eval_batch_size": 4},
    "train": {"masked_steps": 0, "pretrain_steps": 4, "steps": 6, "checkpoint_every": 2, "log_every": 1,
              "verbose": 0},
}


def _config(tmp_path, root, labeled=3, **changes):
    mapping = json.loads(json.dumps(TINY))
    mapping["domains"] = [
        {"name": "synth_camvid", "root": str(root), "labeled": labeled},
        {"name": "camvid", "root": str(root), "labeled": labeled},
    ]
    mapping.update(changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_unknown_domain(tmp_path, camvid_tree):
    config = _config(tmp_path, camvid_tree)
    result = _invoke("train", config, "--set", "domains.1.name=atlantis", "--run-dir", tmp_path / "r")
    _one_line_error(result, "domains.1.name", "atlantis", "synth_camvid")


def test_missing_root_folder(tmp_path):
    config = _config(tmp_path, tmp_path / "no_such_folder")
    result = _invoke("train", config, "--run-dir", tmp_path / "r")
    _one_line_error(result, "domains.0.root", "no_such_folder")


def test_yaml_key_of_the_wrong_type(tmp_path, camvid_tree):
    config = _config(tmp_path, camvid_tree)
    data = yaml.safe_load(config.read_text())
    data["train"]["steps"] = "lots"
    config.write_text(yaml.safe_dump(data))
    _one_line_error(_invoke("train", config), "tiny.yaml", "train.steps", "integer")


def test_set_on_a_key_that_does_not_exist(tmp_path, camvid_tree):
    config = _config(tmp_path, camvid_tree)
    _one_line_error(_invoke("train", config, "--set", "train.warmup=3"), "train.warmup")


def test_cross_domain_supervision_says_when_no_domains_correspond(tmp_path, camvid_tree):
    config = config_lib.load_config(_config(tmp_path, camvid_tree))  # no table between these two
    assert config.loss.cross_domain_supervision == 1.0  # univ_full's default
    lines = []
    train_lib.Experiment(config, tmp_path / "r", echo=lines.append)
    assert lines == ["loss.cross_domain_supervision: no two of the domains (synth_camvid, camvid) have "
                     "corresponding classes (usss_tf.transfer.CORRESPONDENCES); the term is off"]


def test_unlabelled_terms_without_unlabelled_images_per_step_are_an_error(tmp_path, camvid_tree):
    config = _config(tmp_path, camvid_tree, method="univ_paper")
    result = _invoke("train", config, "--set", "data.unlabeled_batch_size=0", "--run-dir", tmp_path / "r")
    _one_line_error(result, "data.unlabeled_batch_size", "loss.within_entropy (0.1)", "loss.cross_entropy (0.1)")
    assert not (tmp_path / "r").exists()


def test_a_domain_without_unlabelled_images_is_named_when_terms_need_them(tmp_path, camvid_tree):
    config = config_lib.load_config(_config(tmp_path, camvid_tree, method="univ_paper"))
    config.domains[1].unlabeled = 0
    lines = []
    train_lib.Experiment(config, tmp_path / "r", echo=lines.append).setup()
    assert [line for line in lines if "get no images" in line] == [
        "domains.1.unlabeled is 0: within_entropy, cross_entropy get no images of camvid"]


def test_corrupt_labelled_png_is_named_and_nothing_is_marked_done(tmp_path):
    root = write_camvid_tree(tmp_path / "data")
    broken = root / "train" / "frame004.png"
    broken.write_bytes(broken.read_bytes()[:60])
    config = _config(tmp_path, root, labeled=8)  # every training image is labelled
    run_dir = tmp_path / "run"
    result = _invoke("train", config, "--run-dir", run_dir)
    _one_line_error(result, str(broken))
    assert not (run_dir / "stages.json").exists()
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_corrupt_unlabelled_png_is_named_after_the_decode_failure(tmp_path):
    from usss_tf import config as config_lib
    from usss_tf.data import sources

    root = write_camvid_tree(tmp_path / "data", num_train=5)
    config = _config(tmp_path, root, labeled=1)
    # Unlabelled images are only decoded inside tf.data; break one of them.
    inputs = sources.prepare_domains(config_lib.load_config(config))
    labelled = {e.image for i in inputs for e in i.labeled}
    broken = next(e.image for e in inputs[0].unlabeled if e.image not in labelled)
    pathlib.Path(broken).write_bytes(b"not a png at all")
    result = _invoke("train", config, "--run-dir", tmp_path / "run", "--set", "train.pretrain_steps=0")
    _one_line_error(result, broken)


def _wait_for(predicate, timeout, process):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.mark.slow(seconds=120)
def test_train_end_to_end_killed_and_resumed_equals_the_uninterrupted_run(tmp_path):
    """``usss-tf train`` killed (SIGKILL) in the universal stage and run again resumes there and
    ends where an uninterrupted run ends: univ_full with both consistency streams, whose strong
    views and feature dropout are drawn per (seed, step)."""
    root = write_camvid_tree(tmp_path / "data")
    # Every term on (univ_full's defaults leave most off), both consistency streams among them.
    config = _config(tmp_path, root, loss={"within_entropy": 0.1, "cross_entropy": 0.1,
                                           "embedding_supervision": 1.0, "consistency_strong": 0.5,
                                           "consistency_feature": 0.25, "consistency_paste": 0.25,
                                           "masked_auxiliary": 0.5},
                     consistency={"threshold": 0.3})
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "usss_tf.cli", "train", str(config), "--run-dir", str(run_dir)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    universal = run_dir / "checkpoints" / "universal"
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed = _wait_for(lambda: list(universal.glob("ckpt-2.index")), 600, process)
    assert killed, process.stdout.read().decode()[-3000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    stages = json.loads((run_dir / "stages.json").read_text())
    assert set(stages) == {"masked", "pretrain", "centroids"}  # masked: 0 steps here
    assert not (run_dir / "metrics.json").exists()
    # The reference: the same run directory without the universal stage's checkpoints, so the
    # universal stage runs uninterrupted from the same finished stages (not trained twice).
    whole = tmp_path / "whole"
    shutil.copytree(run_dir, whole, ignore=shutil.ignore_patterns("universal", "tensorboard"))

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "[pretrain] already finished" in out and "[centroids] already finished" in out
    resumed_from = int(out.split("[universal] resuming from step ")[1].split()[0])
    assert 2 <= resumed_from < 6
    assert "[universal] step 6/6" in out
    for domain in ("synth_camvid", "camvid"):
        assert domain in out.split("domain")[-1]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"synth_camvid", "camvid"}
    assert 0.0 <= metrics["camvid"]["miou"] <= 1.0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["camvid"]["labeled"]) == 3
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == 0
    assert json.loads((run_dir / "run.json").read_text())["seed"] == 0
    assert set(json.loads((run_dir / "stages.json").read_text())) == {
        "masked", "pretrain", "centroids", "universal"}
    assert list((run_dir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((run_dir / "tensorboard" / "validation").glob("events.out.tfevents.*"))
    assert list(universal.glob("ckpt-6.index"))

    whole_out = []
    train_lib.run_experiment(config_lib.load_config(config), whole, echo=whole_out.append)
    assert "[centroids] already finished, skipping" in whole_out  # the stages before: not re-run
    assert "[universal] resuming" not in "\n".join(whole_out)  # the stage itself: from step 0
    whole_miou = {d: r["miou"] for d, r in json.loads((whole / "metrics.json").read_text()).items()}
    assert {d: r["miou"] for d, r in metrics.items()} == pytest.approx(whole_miou, abs=1e-6)
    a = tf.train.load_checkpoint(str(whole / "checkpoints" / "universal" / "ckpt-6"))
    b = tf.train.load_checkpoint(str(universal / "ckpt-6"))
    names = [n for n in a.get_variable_to_shape_map() if n.startswith("model/")]
    assert names
    for name in names:
        np.testing.assert_allclose(a.get_tensor(name), b.get_tensor(name), rtol=1e-5, atol=1e-6,
                                   err_msg=name)

    # Same run directory with a different experiment is refused, not mixed in.
    changed = _invoke("train", config, "--run-dir", run_dir, "--set", "seed=3")
    _one_line_error(changed, "seed")
