"""`usss-tf board`: TensorBoard on loopback over a run directory, as a user starts it."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from usss_tf import board
from usss_tf.errors import ConfigError

CLI = [sys.executable, "-c", "from usss_tf.cli import main; main()"]


def _get(url, payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _start(args, wait_for=None, timeout=120):
    """Starts ``usss-tf ARGS``; returns (process, the URL it prints) once ``wait_for`` was printed too."""
    process = subprocess.Popen(
        CLI + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    deadline = time.time() + timeout
    url = None
    while time.time() < deadline:
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        url = url or (match and match.group(1))
        if url and (wait_for is None or wait_for in line):
            return process, url
        if process.poll() is not None:
            break
    process.kill()
    pytest.fail(f"usss-tf {args[0]} printed no URL" + (f" or no {wait_for!r}" if wait_for else ""))


def test_board_serves_the_run_with_hparams_and_projector(tiny_run):
    process, url = _start(["board", str(tiny_run), "--port", "0"])
    try:
        assert _get(url + "data/logdir")["logdir"] == str(tiny_run)
        runs = _get(url + "data/runs")
        assert {"tensorboard", "tensorboard/train", "tensorboard/validation"} <= set(runs)
        # The projector finds the centroids checkpoint and its metadata.
        info = _get(url + "data/plugin/projector/info?run=tensorboard")
        (embedding,) = info["embeddings"]
        assert embedding["tensorShape"] == [(10 + 7) * 2, 8] and embedding["metadataPath"] == "metadata.tsv"
        # HParams: the run is a session whose metrics are the final validation figures.
        groups = _get(url + "data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 10, "includeMetrics": True,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"metric": {"tag": "miou/mean", "group": "validation"}}],
            "aggregationType": "AGGREGATION_AVG",
        })["sessionGroups"]
        (group,) = groups
        assert group["hparams"]["method"] == "univ_full"
        metrics = {m["name"]["tag"]: m for m in group["metricValues"]}
        assert {"miou/synth_city", "miou/synth_camvid", "miou/mean"} <= set(metrics)
        assert metrics["miou/mean"]["trainingStep"] == 8  # 2 masked + 3 pre-training + 3 universal
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_board_rejects_a_missing_directory(tmp_path):
    result = subprocess.run(CLI + ["board", str(tmp_path / "nope")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "nope: no such directory" in result.stderr
    with pytest.raises(ConfigError, match="no such directory"):
        board.resolve_logdir(tmp_path / "nope")


def test_train_with_tensorboard_serves_the_run_and_keeps_serving(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)  # finished: train only re-evaluates it
    process, url = _start(
        ["train", str(run_dir / "config.yaml"), "--run-dir", str(run_dir), "--tensorboard",
         "--tensorboard-port", "0"],
        wait_for="keeps serving", timeout=300,
    )
    try:
        assert _get(url + "data/logdir")["logdir"] == str(run_dir)
        assert "tensorboard/validation" in _get(url + "data/runs")
    finally:
        process.terminate()
        process.wait(timeout=30)
