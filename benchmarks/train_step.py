"""Steady-state time of one universal training step (all losses, 2 domains); JSON out.

    python benchmarks/train_step.py --backbone erfnet --batch 4 --size 128x256

Images per step = domains x (labelled + unlabelled batch). The first call
(tracing + graph optimisation) is reported apart as ``compile_seconds``.
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from usss_tf.model.segmenter import UniversalSegmenter  # noqa: E402

FULL = {"supervised": 1, "within_entropy": 0.1, "cross_entropy": 0.1, "embedding_supervision": 1}


def measure(backbone, batch, size, width=1.0, steps=10, supervised_only=False):
    keras.utils.set_random_seed(0)
    domains = {"synth_city": 10, "synth_camvid": 7}
    model = UniversalSegmenter(domains, backbone=backbone, width=width)
    model.build()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss_weights={"supervised": 1} if supervised_only else FULL)
    rng = np.random.default_rng(0)
    data = {
        d: {
            "images": tf.constant(rng.uniform(0, 255, (batch, *size, 3)), tf.float32),
            "labels": tf.constant(rng.integers(0, c, (batch, *size)), tf.int32),
            "unlabeled": tf.constant(rng.uniform(0, 255, (batch, *size, 3)), tf.float32),
        }
        for d, c in domains.items()
    }
    step = tf.function(model.train_step)
    start = time.perf_counter()
    float(step(data)["loss"])
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        float(step(data)["loss"])
        times.append(time.perf_counter() - start)
    images = len(domains) * batch * (1 if supervised_only else 2)
    median = float(np.median(times))
    return {
        "backbone": backbone, "width": width, "batch_per_stream": batch, "size": list(size),
        "losses": "supervised" if supervised_only else "all",
        "parameters": int(model.count_params()), "images_per_step": images,
        "compile_seconds": round(compile_seconds, 2), "step_seconds_median": round(median, 4),
        "images_per_second": round(images / median, 2), "steps": steps,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", action="append", default=None)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", default="128x256")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--supervised-only", action="store_true")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    results = [
        measure(b, args.batch, size, args.width, args.steps, args.supervised_only)
        for b in (args.backbone or ["erfnet", "drn_d_22"])
    ]
    report = {
        "benchmark": "train_step", "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "tensorflow": tf.__version__, "keras": keras.__version__, "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
