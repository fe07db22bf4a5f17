"""Benchmarks run in a smoke mode so they cannot silently rot; figures are not asserted."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run_benchmark(tmp_path, script, *args):
    """Runs ``benchmarks/<script>`` with ``args`` and ``--out``; returns its JSON report."""
    out = tmp_path / f"{script}.json"
    command = [sys.executable, str(ROOT / "benchmarks" / script), *map(str, args), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_train_step_benchmark_smoke(tmp_path):
    report = _run_benchmark(tmp_path, "train_step.py", "--backbone", "erfnet", "--batch", "1",
                            "--size", "32x64", "--width", "0.125", "--steps", "2",
                            "--profile", str(tmp_path / "profile"))
    (result,) = report["results"]
    assert result["backbone"] == "erfnet" and result["images_per_step"] == 4
    assert result["step_seconds_median"] > 0
    assert result["compile_seconds"] > 0 and result["precision"] == "float32"
    # The profile names op types from the trace: convolutions and their gradients lead a step.
    profile = result["profile"]
    op_types = {entry["op"] for entry in profile["ops"]}
    assert profile["kernel_ms_per_step"] > 0 and any("Conv2D" in op for op in op_types)
    assert abs(sum(e["share"] for e in profile["ops"]) - 1) < 0.5


@pytest.mark.slow
def test_input_pipeline_benchmark_smoke(tmp_path):
    report = _run_benchmark(tmp_path, "input_pipeline.py", "--image-size", "32x64", "--images", "4",
                            "--crop", "32x64", "--batch", "1", "--steps", "2", "--width", "0.125",
                            "--train-steps", "2")
    assert report["pipeline"]["images_per_step"] == 4  # 2 domains x (1 labelled + 1 unlabelled)
    assert report["pipeline"]["images_per_second"] > 0
    assert report["train_step"]["source"] == "measured" and report["train_step"]["images_per_second"] > 0
    assert report["fed"]["images_per_second"] > 0 and 0 <= report["fed"]["input_stall"] <= 1
    assert report["ratio"] > 0


@pytest.mark.slow
def test_inference_benchmark_smoke(tmp_path):
    report = _run_benchmark(tmp_path, "inference.py", "--smoke")
    assert report["model"]["signature"] == "segment_synth_city_tensor"
    measured = {(r["runtime"], tuple(r["size"]), r["batch"]) for r in report["results"]}
    assert measured == {(runtime, (32, 64), batch)
                        for runtime in ("saved_model", "keras_in_process") for batch in (1, 2)}
    assert all(r["ms_per_image"] > 0 for r in report["results"])


@pytest.mark.slow
def test_serve_benchmark_smoke(tmp_path):
    report = _run_benchmark(tmp_path, "serve.py", "--smoke")
    assert report["size"] == [32, 64] and "untrained" in report["model"]["source"]
    measured = {(r["path"], r["batch"], r["clients"]) for r in report["results"]}
    assert measured == {(path, batch, clients) for path in ("in_process", "grpc")
                        for batch in (1, 8) for clients in (1, 4)}
    assert all(r["latency_ms_p50"] > 0 and r["requests_per_second"] > 0 for r in report["results"])


@pytest.mark.slow(seconds=45)
def test_serve_load_benchmark_smoke(tmp_path, tiny_export):
    # The session's export (--export); the untrained export it would make otherwise is
    # serve.py's, covered by test_serve_benchmark_smoke.
    report = _run_benchmark(tmp_path, "serve_load.py", "--export", tiny_export, "--clients", "2",
                            "--requests", "6", "--size", "32x64")
    assert report["model"] == f"export {tiny_export}"
    kinds = report["kinds"]
    assert sorted(kinds) == ["bomb", "good", "not_an_image", "pinned_version", "unknown_signature",
                             "wrong_dtype"]
    assert sum(k["requests"] for k in kinds.values()) == 12
    # Every request got the code its kind expects: bombs are refused, good ones answered.
    assert report["unexpected_codes"] == 0, kinds
    assert kinds["bomb"]["codes"] == {"INVALID_ARGUMENT": kinds["bomb"]["requests"]}
    assert report["server_rss_mb"]["before"] > 0


@pytest.mark.slow
def test_conv_kernels_benchmark_smoke(tmp_path):
    report = _run_benchmark(tmp_path, "conv_kernels.py", "--batch", "1", "--size", "32x64",
                            "--width", "0.125", "--repeats", "2")
    assert report["benchmark"] == "conv_kernels" and len(report["results"]) == 6
    dilated = report["results"][3]
    assert dilated["channels"] == 64 and dilated["spatial"] == [4, 8] and dilated["dilation"] == 4
    for result in report["results"]:
        for kernel in ("forward", "input_gradient", "filter_gradient"):
            assert result[f"{kernel}_ms"] > 0 and result[f"{kernel}_gflops"] > 0
