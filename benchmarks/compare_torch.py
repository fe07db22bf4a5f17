"""usss-tf's training step vs the same step in PyTorch, side by side on this machine; JSON out.

    python benchmarks/compare_torch.py --torch-python /path/to/venv-with-torch/bin/python \\
        --backbone erfnet --backbone drn_d_22 --backbone drn_d_38 --batch 2 --size 128x256

For each backbone and precision, ``train_step.py``'s measurement (this
process, TensorFlow) and ``torch_train_step.py``'s (a subprocess of
``--torch-python``, default this Python if it has torch) run back to back with
the same threads; ``ratio`` = ours / PyTorch images per second. With
``--rounds R`` the pair is measured R times, alternating, and the report
gives every round's ratio and their median: on a shared machine the load
moves between measurements, and a pair measured back to back shares it.

``--interleave`` goes further: both models are built and warmed up side by
side (PyTorch in a subprocess that steps on request), then their steps
alternate one by one, so each of our steps has a PyTorch step next to it
under the same load; ``ratio`` is the median of the per-pair ratios. Only
one of the two computes at any time.
PyTorch is not a dependency: this is run by hand, never in CI.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_step import (  # noqa: E402
    images_per_step, machine, make_step, measure, synthetic_batch, timed_step, write_report,
)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = pathlib.Path(__file__).parent


def torch_measure(python, backbone, batch, size, width, steps, threads, precision, channels_last):
    command = [python, str(HERE / "torch_train_step.py"), "--backbone", backbone, "--batch", str(batch),
               "--size", f"{size[0]}x{size[1]}", "--width", str(width), "--steps", str(steps),
               "--threads", str(threads), "--precision", precision]
    if channels_last:
        command.append("--channels-last")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    report = json.loads(output)
    return report["torch"], report["results"][0]


def interleaved(python, backbone, batch, size, width, steps, threads, precision, channels_last):
    """Our step and PyTorch's, alternating one by one; per-pair ratios (see the module doc)."""
    command = [python, str(HERE / "torch_train_step.py"), "--serve-steps", "--backbone", backbone,
               "--batch", str(batch), "--size", f"{size[0]}x{size[1]}", "--width", str(width),
               "--threads", str(threads), "--precision", precision]
    if channels_last:
        command.append("--channels-last")
    theirs_process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
    try:
        model, step = make_step(backbone, width, precision=precision)
        data = synthetic_batch(batch, size)
        compile_seconds = timed_step(step, data)
        ready = json.loads(theirs_process.stdout.readline())

        def theirs_step():
            theirs_process.stdin.write("step\n")
            theirs_process.stdin.flush()
            return float(theirs_process.stdout.readline())

        ours, theirs = [], []
        for i in range(steps):  # alternate who goes first, so neither always follows the other
            if i % 2:
                theirs.append(theirs_step())
                ours.append(timed_step(step, data))
            else:
                ours.append(timed_step(step, data))
                theirs.append(theirs_step())
    finally:
        theirs_process.stdin.close()
        theirs_process.wait(timeout=120)
    images = images_per_step(batch)
    ratios = [t / o for o, t in zip(ours, theirs)]
    return ready["torch"], {
        "backbone": backbone, "precision": precision, "mode": "interleaved", "steps": steps,
        "ours_images_per_second": round(images / statistics.median(ours), 2),
        "torch_images_per_second": round(images / statistics.median(theirs), 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_quartiles": [round(float(q), 3) for q in np.percentile(ratios, [25, 75])],
        "ours_compile_seconds": round(compile_seconds, 2), "torch_first_step_seconds": ready["ready"],
        "ours_parameters": int(model.count_params()), "torch_parameters": ready["parameters"],
        "ours_step_seconds": [round(t, 4) for t in ours],
        "torch_step_seconds": [round(t, 4) for t in theirs],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--backbone", action="append", default=None)
    parser.add_argument("--precision", action="append", default=None,
                        help="float32 and/or mixed_bfloat16 (repeatable; default float32)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", default="128x256")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--channels-last", action="store_true", help="PyTorch in channels_last")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each pair this many times, alternating; report the median ratio")
    parser.add_argument("--interleave", action="store_true",
                        help="alternate single steps of the two (both warm) and report per-pair ratios")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    threads = os.cpu_count()
    rows, torch_version = [], None
    for precision in args.precision or ["float32"]:
        for backbone in args.backbone or ["erfnet", "drn_d_22", "drn_d_38"]:
            if args.interleave:
                torch_version, row = interleaved(args.torch_python, backbone, args.batch, size,
                                                 args.width, args.steps, threads, precision,
                                                 args.channels_last)
                rows.append(row)
                print(f"{backbone} {precision}: ours {row['ours_images_per_second']} img/s, torch "
                      f"{row['torch_images_per_second']} img/s, ratio {row['ratio']}",
                      file=sys.stderr, flush=True)
                continue
            rounds = []
            for _ in range(args.rounds):
                ours = measure(backbone, args.batch, size, args.width, args.steps, precision=precision)
                torch_version, theirs = torch_measure(args.torch_python, backbone, args.batch, size,
                                                      args.width, args.steps, threads, precision,
                                                      args.channels_last)
                rounds.append((ours, theirs))
                print(f"{backbone} {precision}: ours {ours['images_per_second']} img/s, "
                      f"torch {theirs['images_per_second']} img/s", file=sys.stderr, flush=True)
            ratios = [o["images_per_second"] / t["images_per_second"] for o, t in rounds]
            rows.append({
                "backbone": backbone, "precision": precision,
                "ours_images_per_second": statistics.median(o["images_per_second"] for o, _ in rounds),
                "torch_images_per_second": statistics.median(t["images_per_second"] for _, t in rounds),
                "ratio": round(statistics.median(ratios), 3),
                "round_ratios": [round(r, 3) for r in ratios],
                "ours": [o for o, _ in rounds], "torch": [t for _, t in rounds],
            })
    write_report({
        "benchmark": "compare_torch", "machine": machine(), "threads": threads,
        "tensorflow": tf.__version__, "torch": torch_version, "results": rows,
    }, args.out)


if __name__ == "__main__":
    main()
