"""Images/s of the tf.data training pipeline alone, and against the train step it feeds; JSON out.

    python benchmarks/input_pipeline.py --image-size 256x512 --crop 128x256 --batch 4

Writes the two synthetic domains (Cityscapes and CamVid layouts, PNG files)
into a temporary folder, then measures ``usss_tf.data.pipeline.train_dataset``
exactly as training uses it: read -> decode PNG -> raw-id -> train-id lookup
-> random scale, crop, flip, photometric jitter -> batch -> prefetch, for both
domains, labelled and unlabelled streams. Three figures:

* ``pipeline``: images/s when nothing but the pipeline runs;
* ``train_step``: images/s the universal train step consumes on a constant
  in-memory batch of the same shape (or ``--train-images-per-second``);
* ``fed``: images/s of the train step when the pipeline feeds it, the two
  running side by side as in ``fit`` (``input_stall`` = the share of the
  step's time lost to waiting for input; 0 means the pipeline keeps up).

``ratio`` = pipeline / train_step: above 1 the pipeline can keep up, but on
a CPU-only machine the pipeline and the step share the same cores, which is
what ``fed`` measures.
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

from train_step import DOMAINS, machine, make_step, synthetic_batch, time_steps, write_report  # noqa: E402
from usss_tf import config as config_lib  # noqa: E402
from usss_tf.data import pipeline, sources, synthetic  # noqa: E402


def _size(text):
    return tuple(int(v) for v in text.split("x"))


def domain_inputs(data_dir, image_size, num_images, crop, batch, seed=0):
    """Synthetic domains written to ``data_dir``; (``DomainInputs`` list, ``ExperimentConfig``)."""
    roots = synthetic.write_synthetic_domains(
        data_dir, tuple(DOMAINS), num_train=num_images, num_val=1, size=image_size, seed=seed
    )
    config = config_lib.config_from_dict({
        "seed": seed,
        "domains": [{"name": name, "root": str(root), "labeled": num_images // 2}
                    for name, root in roots.items()],
        "data": {"crop": list(crop), "batch_size": batch, "unlabeled_batch_size": batch},
    })
    return sources.prepare_domains(config, check=False), config


def measure_pipeline(inputs, config, steps, warmup=3):
    """Steady-state elements of ``train_dataset``: (first element seconds, steps/s, images/step)."""
    start = time.perf_counter()
    dataset = pipeline.train_dataset(inputs, config.data, config.seed, 0, warmup + steps)
    iterator = iter(dataset)
    next(iterator)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        element = next(iterator)
    elapsed = time.perf_counter() - start
    images = sum(int(tf.shape(v)[0]) for d in element.values() for v in
                 (d["images"], d["unlabeled"]))
    return first, steps / elapsed, images


def _augmentations(augment):
    """The training crops' augmentations as the config has them, in words."""
    steps = [f"scale {augment.min_scale}-{augment.max_scale}", "crop"]
    steps += [name for name, on in (("flip", augment.flip), ("photometric", augment.photometric),
                                     ("copy-paste", augment.copy_paste), ("class hue", augment.class_hue)) if on]
    return ", ".join(steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", default="256x512", help="synthetic images on disk, HxW")
    parser.add_argument("--images", type=int, default=40, help="training images per domain on disk")
    parser.add_argument("--crop", default="128x256")
    parser.add_argument("--batch", type=int, default=4, help="labelled (and unlabelled) images per domain")
    parser.add_argument("--steps", type=int, default=20, help="pipeline elements (steps) timed")
    parser.add_argument("--backbone", default="erfnet", help="model of the train step")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--train-steps", type=int, default=5, help="train steps timed (constant and fed)")
    parser.add_argument("--train-images-per-second", type=float, default=None,
                        help="take the train step's rate from train_step.py instead of measuring it")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    crop, image_size = _size(args.crop), _size(args.image_size)

    with tempfile.TemporaryDirectory(prefix="usss-bench-") as scratch:
        start = time.perf_counter()
        inputs, config = domain_inputs(scratch, image_size, args.images, crop, args.batch)
        generate_seconds = time.perf_counter() - start
        first, steps_per_second, images_per_step = measure_pipeline(inputs, config, args.steps)
        report = {
            "benchmark": "input_pipeline", "machine": machine(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "setup": {
                "domains": list(DOMAINS), "image_size": list(image_size), "crop": list(crop),
                "batch_per_stream": args.batch, "images_on_disk_per_domain": args.images,
                "augment": _augmentations(config.data.augment), "generate_seconds": round(generate_seconds, 1),
            },
            "pipeline": {
                "images_per_step": images_per_step, "steps": args.steps,
                "first_element_seconds": round(first, 3),
                "steps_per_second": round(steps_per_second, 3),
                "images_per_second": round(steps_per_second * images_per_step, 1),
            },
        }
        if args.train_images_per_second:
            report["train_step"] = {"source": "given", "images_per_second": args.train_images_per_second}
        else:
            _, step = make_step(args.backbone, args.width)
            constant = synthetic_batch(args.batch, crop)
            compile_seconds, times = time_steps(step, iter(lambda: constant, None), args.train_steps)
            train_rate = images_per_step / float(np.median(times))
            dataset = pipeline.train_dataset(inputs, config.data, config.seed, 0, args.train_steps + 2)
            _, fed_times = time_steps(step, iter(dataset), args.train_steps)
            fed_rate = images_per_step / float(np.median(fed_times))
            report["train_step"] = {
                "source": "measured", "backbone": args.backbone, "width": args.width,
                "compile_seconds": round(compile_seconds, 2), "steps": args.train_steps,
                "images_per_second": round(train_rate, 2),
            }
            report["fed"] = {
                "images_per_second": round(fed_rate, 2),
                "input_stall": round(max(0.0, 1.0 - fed_rate / train_rate), 3),
            }
        report["ratio"] = round(
            report["pipeline"]["images_per_second"] / report["train_step"]["images_per_second"], 2
        )
    write_report(report, args.out)


if __name__ == "__main__":
    main()
