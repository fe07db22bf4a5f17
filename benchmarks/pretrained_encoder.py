"""Does a pretrained encoder help the few-label quickstart? Pretrained vs from scratch; JSON out.

    python benchmarks/pretrained_encoder.py --out runs/pretrained_encoder --seeds 0,1,2

Without downloads, "pretrained" means: the quickstart's encoder (ERFNet, width
0.5) trained fully supervised on all 60 training images of a third synthetic
style, ``synth_idd`` (hazy noon, its own label space), never seen by the
quickstart. Its encoder is saved (``usss-tf weights encoder``) and the
quickstart (``pipelines/quickstart.yaml``, synth_city + synth_camvid, 10
labels each) is trained per seed from scratch, from the pretrained encoder
(``train.encoder_lr_multiplier`` 1.0, the default) and with multiplier 0.1.
Everything else is the quickstart's. Reports every run's validation mIoU, mean +- std per
variant and the paired (same seed) differences to scratch.
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_step import machine, write_report  # noqa: E402

from usss_tf import config as config_lib  # noqa: E402
from usss_tf import runs  # noqa: E402
from usss_tf import train as train_lib  # noqa: E402
from usss_tf.data import synthetic  # noqa: E402

QUICKSTART = pathlib.Path(__file__).resolve().parents[1] / "pipelines" / "quickstart.yaml"


def pretrain(out, data, steps):
    """Trains the quickstart's encoder on all of synth_idd; returns (weights path, seconds)."""
    weights = out / "synth_idd_encoder.weights.h5"
    root = synthetic.write_synthetic_domains(data, ("synth_idd",), size=(128, 256), seed=0)["synth_idd"]
    quickstart = config_lib.load_config(QUICKSTART)
    config = config_lib.config_from_dict({
        "name": "pretrain_synth_idd", "method": "supervised", "seed": 0,
        "domains": [{"name": "synth_idd", "root": str(root), "labeled": 60, "scale": 0.5}],
        "model": dataclasses.asdict(quickstart.model),
        "data": dataclasses.asdict(quickstart.data),
        "train": {**dataclasses.asdict(quickstart.train), "pretrain_steps": steps // 2,
                  "steps": steps - steps // 2, "verbose": 0},
    })
    start = time.perf_counter()
    run_dir = out / "pretrain_synth_idd"
    train_lib.run_experiment(config, run_dir, echo=lambda *_: None)
    runs.save_encoder(run_dir / "supervised" / "synth_idd", weights)
    return weights, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/pretrained_encoder")
    parser.add_argument("--data", default="data/synth", help="where the synthetic domains are written")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights, pretrain_seconds = pretrain(out, pathlib.Path(args.data), args.pretrain_steps)
    variants = {
        "scratch": [],
        "pretrained": [f"model.backbone_weights={weights}"],
        "pretrained_lr_x0.1": [f"model.backbone_weights={weights}", "train.encoder_lr_multiplier=0.1"],
    }
    results = {name: {} for name in variants}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, overrides in variants.items():
            config = config_lib.load_config(QUICKSTART, [f"seed={seed}", "train.verbose=0", *overrides])
            start = time.perf_counter()
            figures = train_lib.run_experiment(config, out / f"{name}_seed{seed}", echo=lambda *_: None)
            results[name][seed] = {
                "miou": {d: round(r["miou"], 4) for d, r in figures.items()},
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(name, seed, results[name][seed], file=sys.stderr, flush=True)
    summary = {}
    for name, by_seed in results.items():
        summary[name] = {}
        for domain in next(iter(by_seed.values()))["miou"]:
            values = [r["miou"][domain] for r in by_seed.values()]
            entry = {"mean": round(statistics.mean(values), 4),
                     "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}
            if name != "scratch":
                diffs = [by_seed[s]["miou"][domain] - results["scratch"][s]["miou"][domain]
                         for s in by_seed]
                entry["paired_difference_to_scratch"] = [round(d, 4) for d in diffs]
                entry["mean_paired_difference"] = round(statistics.mean(diffs), 4)
            summary[name][domain] = entry
    write_report({
        "benchmark": "pretrained_encoder", "machine": machine(),
        "pretrain": {"domain": "synth_idd", "labeled": 60, "steps": args.pretrain_steps,
                     "seconds": round(pretrain_seconds, 1), "weights": str(weights)},
        "quickstart": str(QUICKSTART), "runs": results, "summary": summary,
    }, args.json)


if __name__ == "__main__":
    main()
