"""Benchmarks run in a smoke mode so they cannot silently rot; figures are not asserted."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_train_step_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--backbone", "erfnet",
         "--batch", "1", "--size", "32x64", "--width", "0.125", "--steps", "2", "--out", str(out)],
        check=True, capture_output=True, timeout=600,
    )
    report = json.loads(out.read_text())
    (result,) = report["results"]
    assert result["backbone"] == "erfnet" and result["images_per_step"] == 4
    assert result["step_seconds_median"] > 0
