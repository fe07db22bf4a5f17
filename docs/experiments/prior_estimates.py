"""How close three class priors are to the validation set's, on the model at the start of the universal stage.

    python docs/experiments/prior_estimates.py RUN_DIR...   (each with RUN_DIR.json from `usss-tf evaluate --json`)

Prints, per domain, the L1 distance to the validation class frequency of: the
labelled images' frequency, the mean prediction on the unlabelled crops, and
the EM estimate (Saerens et al. 2002) with the model's mean prediction on the
labelled crops as the training prior. docs/RESULTS.md, "A class prior
estimated from the unlabelled images".
"""
import dataclasses, sys, pathlib, json
import numpy as np, tensorflow as tf
from usss_tf import runs
from usss_tf.data import sources, pipeline
from usss_tf.model.segmenter import UniversalSegmenter

for run_dir in map(pathlib.Path, sys.argv[1:]):
    cfg = runs.read_config(run_dir)
    truth_json = json.load(open(str(run_dir) + ".json"))
    model = UniversalSegmenter.from_experiment(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone_weights=None)))
    model.build()
    tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(str(run_dir / "checkpoints" / "pretrain"))).expect_partial()
    inputs = sources.prepare_domains(cfg)
    steps = list(pipeline.train_dataset(inputs, cfg.data, cfg.seed, 300, 40, consistency=cfg.consistency, copy_paste=True).take(40))
    row = [run_dir.name]
    for d in inputs:
        name = d.domain.name; C = d.domain.num_classes
        cm = np.array(truth_json[name]["confusion_matrix"]); truth = cm.sum(1) / cm.sum()
        draw = pipeline.labelled_class_frequency([e.label for e in d.labeled], d.domain.lookup_table(), C).numpy()
        unl = np.concatenate([tf.nn.softmax(model(s[name]["unlabeled"])[name]).numpy()[s[name]["unlabeled_valid"].numpy() > 0] for s in steps])
        lab = np.concatenate([tf.nn.softmax(model(s[name]["images"])[name]).numpy()[s[name]["labels"].numpy() != 255] for s in steps])
        q = lab.mean(0); r = q
        for _ in range(50):
            a = unl * (r / q); a /= a.sum(1, keepdims=True); r = a.mean(0)
        l1 = lambda p: np.abs(p - truth).sum()
        row.append(f"{name}: draw {l1(draw):.2f} mean-pred {l1(unl.mean(0)):.2f} EM {l1(r):.2f}")
    print(" | ".join(row), flush=True)
