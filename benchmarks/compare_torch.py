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
PyTorch is not a dependency: this is run by hand, never in CI.
"""

import argparse
import json
import statistics
import os
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_step import machine, measure, write_report  # noqa: E402

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
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    threads = os.cpu_count()
    rows, torch_version = [], None
    for precision in args.precision or ["float32"]:
        for backbone in args.backbone or ["erfnet", "drn_d_22", "drn_d_38"]:
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
