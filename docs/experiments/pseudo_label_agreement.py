"""How right a run's pseudo-labels are, and whether the other domain's decoder can vet them.

For each domain of a finished run with a corresponding domain
(``usss_tf.transfer``), on the run's unlabelled training images (the
domain's train split minus its labelled draw, from ``manifest.json``; the
synthetic domains have labels for all of them), the pixel accuracy and the
share of pixels ("coverage") of the domain's own decoder's argmax:

* ``all``: every labelled pixel;
* ``confident``: where its top probability is at least
  ``consistency.threshold`` (the fixed threshold of the consistency terms);
* ``agree``: where the other domain's decoder, on the same features,
  predicts a class whose counterpart set holds the own argmax (a class
  without counterpart on either side counts as agreeing: it has no vote);
* ``agree_confident``: both.

and per class (``--by-class``): of the class's pixels, the share that is
confident, and the share confident *and* right (what the consistency terms
can teach about it); of the confident pixels predicted as the class, the
share right (the precision of its pseudo-labels).

The question it answers (docs/RESULTS.md, nineteenth session): would
co-training across label spaces (keep a pseudo-label only where the two
decoders agree) make the consistency terms' targets cleaner?

    python docs/experiments/pseudo_label_agreement.py RUN_DIR [--by-class] [--json OUT]
"""

import argparse
import json
import pathlib

import numpy as np
import tensorflow as tf

from usss_tf import inference, runs, transfer
from usss_tf.data import readers, sources


def unlabelled_examples(run, domain):
    """The run's unlabelled training examples of ``domain`` (labels present on disk)."""
    entry = json.loads((pathlib.Path(run.run_dir) / "manifest.json").read_text())[domain.name]
    index, domain_config = next((i, d) for i, d in enumerate(run.config.domains) if d.name == domain.name)
    root = sources.run_root(domain_config, index, entry, (domain_config.train_split,))  # As evaluate reads it.
    labelled = set(entry["labeled"])
    examples = readers.list_examples(domain, root, domain_config.train_split)
    return [e for e in examples if e.key not in labelled]


def agreement_figures(run, domain, other, threshold, batch_size=4):
    sets = transfer.correspondence(other, domain.name).label_sets()[:-1]  # [other classes, own classes]
    other_has_counterpart, own_has_counterpart = sets.sum(1) > 0, sets.sum(0) > 0
    counts = {way: [0, 0] for way in ("all", "confident", "agree", "agree_confident")}
    classes = domain.num_classes
    # Per class: its pixels, confident ones, confident and right; confident predictions of it, right.
    per_class = np.zeros((5, classes), np.int64)
    loaded = inference.load_examples(unlabelled_examples(run, domain), domain.lookup_table())
    for batch in inference.same_size_batches(loaded, batch_size):
        images, labels = inference.stack(batch)
        features = run.model.features(tf.convert_to_tensor(images), domain.name)
        probabilities = tf.nn.softmax(run.model.decode(features, domain.name, labels.shape[1:3])).numpy()
        others = run.model.decode(features, other, labels.shape[1:3]).numpy().argmax(-1)
        own = probabilities.argmax(-1)
        agree = (sets[others, own] > 0) | ~other_has_counterpart[others] | ~own_has_counterpart[own]
        confident = probabilities.max(-1) >= threshold
        known = labels != 255
        right = (own == labels) & known
        for way, mask in (("all", known), ("confident", known & confident), ("agree", known & agree),
                          ("agree_confident", known & agree & confident)):
            counts[way][0] += int((right & mask).sum())
            counts[way][1] += int(mask.sum())
        truth = np.where(known, labels, classes)  # Unknown pixels in an extra bin, dropped below.
        for row, (values, mask) in enumerate(((truth, known), (truth, known & confident),
                                              (truth, right & confident), (own, known & confident),
                                              (own, right & confident))):
            per_class[row] += np.bincount(values[mask], minlength=classes + 1)[:classes]
    total = counts["all"][1]
    figures = {way: {"accuracy": right / max(n, 1), "coverage": n / max(total, 1)}
               for way, (right, n) in counts.items()}
    pixels, confident_pixels, confident_right, predicted, predicted_right = per_class
    by_class = {name: {"pixels": int(pixels[c]),
                       "confident": confident_pixels[c] / max(pixels[c], 1),
                       "confident_and_right": confident_right[c] / max(pixels[c], 1),
                       "precision": predicted_right[c] / max(predicted[c], 1)}
                for c, name in enumerate(domain.class_names)}
    return figures, by_class


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--by-class", action="store_true", help="print the per-class figures too")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    run = runs.load_run(args.run_dir)
    names = [d.name for d in run.domains]
    results = {}
    for domain in run.domains:
        for other in names:
            if other != domain.name and transfer.correspondence(other, domain.name) is not None:
                figures, by_class = agreement_figures(run, domain, other, run.config.consistency.threshold)
                results[f"{domain.name}<-{other}"] = {**figures, "by_class": by_class}
    for pair, figures in results.items():
        print(pair, "  ".join(f"{way}: {100 * f['accuracy']:.1f}% right on {100 * f['coverage']:.0f}%"
                               for way, f in figures.items() if way != "by_class"))
        if args.by_class:
            for name, f in figures["by_class"].items():
                print(f"  {name}: {f['pixels']} pixels, {100 * f['confident']:.0f}% confident, "
                      f"{100 * f['confident_and_right']:.0f}% confident and right; "
                      f"confident predictions of it {100 * f['precision']:.0f}% right")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
