"""Latency of the exported SavedModel per image, next to the Keras model in process; JSON out.

    python benchmarks/inference.py --backbone erfnet                 # a fresh model
    python benchmarks/inference.py --run-dir runs/quickstart         # a trained run

Exports the model with ``usss_tf.export.export_model`` into a temporary
folder, loads it back with ``tf.saved_model.load`` and calls the signature
``segment_<domain>_tensor`` (uint8 images [B, H, W, 3] -> ``class_ids`` and
``probabilities`` at [H, W]); next to it, the same computation on the Keras
model in this process (``model.segment`` in a ``tf.function``). For each
size (default 512x1024 and 256x512) and batch (default 1 and 8): the first
call apart (tracing / loading the graph), then the median latency of a batch
and per image. Latency does not depend on the weights, so an untrained model
is as good as a trained one for these figures.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from train_step import DOMAINS, machine, write_report  # noqa: E402
from usss_tf import domains as domain_registry  # noqa: E402
from usss_tf import export, runs  # noqa: E402
from usss_tf.serving import contract  # noqa: E402
from usss_tf.model.segmenter import UniversalSegmenter  # noqa: E402


def _size(text):
    return tuple(int(v) for v in text.split("x"))


def load_model(run_dir, backbone, width):
    """(model, domains): a trained run's, or a freshly built one over the synthetic domains."""
    if run_dir:
        loaded = runs.load_run(run_dir)
        return loaded.model, loaded.domains
    keras.utils.set_random_seed(0)
    model = UniversalSegmenter(DOMAINS, backbone=backbone, width=width)
    model.build()
    return model, [domain_registry.get_domain(name) for name in DOMAINS]


def time_calls(function, images, repeats):
    """(first call seconds, median seconds of ``repeats`` further calls); outputs fetched each time."""
    start = time.perf_counter()
    function(images)["class_ids"].numpy()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(images)["class_ids"].numpy()
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="a trained run directory (default: a fresh model)")
    parser.add_argument("--backbone", default="erfnet")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--domain", default=None, help="signature domain (default: the model's first)")
    parser.add_argument("--size", action="append", default=None, help="HxW, repeatable (default 512x1024, 256x512)")
    parser.add_argument("--batch", action="append", type=int, default=None, help="repeatable (default 1, 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and model, one repeat (for tests)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.batch, args.repeats = args.size or ["32x64"], args.batch or [1, 2], 1
        args.width = 0.125 if not args.run_dir else args.width
    sizes = [_size(s) for s in (args.size or ["512x1024", "256x512"])]
    batches = args.batch or [1, 8]

    model, domains = load_model(args.run_dir, args.backbone, args.width)
    domain = args.domain or domains[0].name
    in_process = tf.function(
        lambda images: model.segment(images, domain),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="usss-bench-") as scratch:
        start = time.perf_counter()
        export_dir = export.export_model(model, domains, pathlib.Path(scratch) / "1")
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        signature = tf.saved_model.load(str(export_dir)).signatures[contract.tensor_signature(domain)]
        load_seconds = time.perf_counter() - start
        runtimes = {
            "saved_model": lambda images: signature(images=images),
            "keras_in_process": in_process,
        }
        rng = np.random.default_rng(0)
        for height, width in sizes:
            for batch in batches:
                images = tf.constant(rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8))
                for runtime, function in runtimes.items():
                    first, median = time_calls(function, images, args.repeats)
                    results.append({
                        "runtime": runtime, "size": [height, width], "batch": batch,
                        "first_call_seconds": round(first, 3),
                        "batch_seconds_median": round(median, 4),
                        "ms_per_image": round(1000 * median / batch, 1),
                        "images_per_second": round(batch / median, 2),
                    })
    write_report({
        "benchmark": "inference", "machine": machine(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "model": {
            "run_dir": args.run_dir, "backbone": model.backbone_name, "width": model.width,
            "parameters": int(model.count_params()), "signature": contract.tensor_signature(domain),
        },
        "export_seconds": round(export_seconds, 1), "load_seconds": round(load_seconds, 1),
        "repeats": args.repeats, "results": results,
    }, args.out)


if __name__ == "__main__":
    main()
