"""Steady-state time of one universal training step (all losses, 2 domains); JSON out.

    python benchmarks/train_step.py --backbone erfnet --batch 4 --size 128x256

Images per step = domains x (labelled + unlabelled batch). The first call
(tracing + graph optimisation) is reported apart as ``compile_seconds``; the
steady state is the median of the following calls, each synchronised on the
loss so no call returns before its step has run. The batch is a constant in
memory: this is the model's speed, without the input pipeline
(``input_pipeline.py`` measures that one).
"""

import argparse
import collections
import glob
import json
import os
import platform
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from machine_info import cpu_model  # noqa: E402
from usss_tf import precision as precision_lib  # noqa: E402
from usss_tf.config import TrainConfig  # noqa: E402
from usss_tf.method import Objective  # noqa: E402
from usss_tf.optimizer import make_optimizer  # noqa: E402
from usss_tf.model.segmenter import UniversalSegmenter  # noqa: E402

DOMAINS = {"synth_city": 10, "synth_camvid": 7}
FULL = {"supervised": 1, "within_entropy": 0.1, "cross_entropy": 0.1, "embedding_supervision": 1}


def make_step(backbone, width=1.0, supervised_only=False, precision="float32", domains=DOMAINS):
    """A compiled model and its train step as a ``tf.function`` (not yet traced)."""
    keras.utils.set_random_seed(0)
    with precision_lib.dtype_policy(precision):
        model = UniversalSegmenter(domains, backbone=backbone, width=width)
    model.build()
    model.objective = Objective({"supervised": 1} if supervised_only else FULL,
                                num_domains=len(model.domains))
    # The training command's optimizer (AdamW, polynomial decay) and trace settings (no autograph).
    model.compile(optimizer=make_optimizer(TrainConfig(optimizer="adamw", learning_rate=1e-3), 1000))
    return model, tf.function(model.train_step, autograph=False)


def synthetic_batch(batch, size, supervised_only=False, domains=DOMAINS):
    """One step's input for every domain, as constant tensors."""
    rng = np.random.default_rng(0)
    data = {}
    for name, num_classes in domains.items():
        data[name] = {
            "images": tf.constant(rng.uniform(0, 255, (batch, *size, 3)), tf.float32),
            "labels": tf.constant(rng.integers(0, num_classes, (batch, *size)), tf.int32),
        }
        if not supervised_only:
            data[name]["unlabeled"] = tf.constant(rng.uniform(0, 255, (batch, *size, 3)), tf.float32)
    return data


def timed_step(step, data):
    """Seconds of one call of ``step``, synchronised on its loss."""
    start = time.perf_counter()
    float(step(data)["loss"])
    return time.perf_counter() - start


def images_per_step(batch, supervised_only=False):
    return len(DOMAINS) * batch * (1 if supervised_only else 2)


def time_steps(step, batches, steps):
    """(first call seconds, per-step seconds of the next ``steps`` calls); ``batches`` yields inputs."""
    batches = iter(batches)
    first = timed_step(step, next(batches))
    return first, [timed_step(step, next(batches)) for _ in range(steps)]


# A kernel's trace event on a TensorFlow compute thread: "<op name>:<op type>".
_KERNEL_EVENT = re.compile(r"^[^:]+:([A-Za-z0-9_]+)$")


def top_ops(logdir, steps, top=15):
    """Time per step by op type from a ``tf.profiler`` trace in ``logdir``, largest first.

    Sums the kernel events of TensorFlow's compute threads (the host plane of
    the ``.xplane.pb``); with inter-op parallelism two kernels can overlap,
    so the shares are of kernel time, not of wall time.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not paths:
        raise FileNotFoundError(f"no .xplane.pb trace under {logdir}")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                match = _KERNEL_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if match:
                    totals[match.group(1)] += event.duration_ps
    kernel_ps = sum(totals.values())
    return {
        "kernel_ms_per_step": round(kernel_ps / 1e9 / steps, 1),
        "ops": [
            {"op": op, "ms_per_step": round(ps / 1e9 / steps, 1),
             "share": round(ps / kernel_ps, 3)}
            for op, ps in totals.most_common(top)
        ],
    }


def profile_steps(step, data, steps, logdir):
    """Traces ``steps`` calls of an already traced ``step`` with ``tf.profiler`` into ``logdir``."""
    tf.profiler.experimental.start(logdir)
    try:
        for _ in range(steps):
            float(step(data)["loss"])
    finally:
        tf.profiler.experimental.stop()
    return top_ops(logdir, steps)


def measure(backbone, batch, size, width=1.0, steps=10, supervised_only=False, precision="float32",
            profile_dir=None):
    model, step = make_step(backbone, width, supervised_only, precision)
    data = synthetic_batch(batch, size, supervised_only)
    compile_seconds, times = time_steps(step, iter(lambda: data, None), steps)
    images = images_per_step(batch, supervised_only)
    median = float(np.median(times))
    profile = {}
    if profile_dir:
        logdir = os.path.join(profile_dir, f"{backbone}_{precision}")
        profile = {"profile": {"logdir": logdir, **profile_steps(step, data, min(steps, 3), logdir)}}
    return {
        "backbone": backbone, "width": width, "batch_per_stream": batch, "size": list(size),
        "losses": "supervised" if supervised_only else "all", "precision": precision,
        "parameters": int(model.count_params()), "images_per_step": images,
        "compile_seconds": round(compile_seconds, 2), "step_seconds_median": round(median, 4),
        "step_seconds_min": round(float(np.min(times)), 4),
        "images_per_second": round(images / median, 2), "steps": steps, **profile,
    }



def machine():
    return (f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} cpus, "
            f"{len(tf.config.list_physical_devices('GPU'))} gpus")


def write_report(report, out=None):
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", action="append", default=None,
                        help="repeatable; default erfnet and drn_d_22")
    parser.add_argument("--batch", type=int, default=4, help="images per stream per domain")
    parser.add_argument("--size", default="128x256")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--supervised-only", action="store_true")
    parser.add_argument("--precision", default="float32", choices=precision_lib.POLICIES)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="after timing, trace 3 steps with tf.profiler into DIR (TensorBoard's "
                             "Profile tab) and add the top op types per step to the JSON")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    results = [
        measure(b, args.batch, size, args.width, args.steps, args.supervised_only, args.precision,
                args.profile)
        for b in (args.backbone or ["erfnet", "drn_d_22"])
    ]
    write_report({
        "benchmark": "train_step", "machine": machine(),
        "tensorflow": tf.__version__, "keras": keras.__version__, "results": results,
    }, args.out)


if __name__ == "__main__":
    main()
