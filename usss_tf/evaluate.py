"""Evaluation of a trained run on every image of a split, at the labels' resolution.

This is the figure a paper table reports: for each domain, the confusion
matrix over all pixels of the split whose label is not ignored, and from it
the per-class IoU, mIoU and pixel accuracy (the Cityscapes benchmark's
definitions; on Cityscapes-layout data the figures equal those of
``cityscapesscripts``' pixel-level evaluation of the same predictions).

Images are never padded: consecutive images of the same size share a batch,
and each image goes through the model's one inference path (the domain's
``scale``, normalisation, encoder, decoder) and is upsampled to its label's own
size. Validation during training is this same function on the first
``data.max_val_images`` images, and the exported signatures run the same path,
so a served model predicts what this module measures. Predictions can be
written as PNGs in the dataset's raw ids (Cityscapes: labelIds, what its
official scripts and server expect) and/or as colourised images.
"""

import pathlib
import time

import numpy as np
from PIL import Image

from usss_tf import domains as domain_registry
from usss_tf import metrics as metrics_lib
from usss_tf import inference, method, runs, transfer
from usss_tf.data import readers, sources
from usss_tf.errors import ConfigError, UnknownDomainError, UsssError
from usss_tf.run_dir import MANIFEST, RunDir, write_json_atomic


def train_to_raw(domain):
    """``uint8[256]``: train id -> the dataset's raw id (the smallest raw id that maps to it).

    Train ids with no raw id (and the ignore value) map to ``IGNORE_LABEL``.
    """
    table = np.full(256, domain_registry.IGNORE_LABEL, np.uint8)
    for raw, train in sorted(domain.raw_to_train, reverse=True):
        if train != domain_registry.IGNORE_LABEL:
            table[train] = raw
    return table


def _split_name(domain_config, split):
    return {"val": domain_config.val_split, "train": domain_config.train_split}.get(split, split)


def _select_domains(config, names):
    available = [d.name for d in config.domains]
    for name in names or ():
        if name not in available:
            raise UnknownDomainError(
                f"--domain {name!r}: the run has no such domain; it has: {', '.join(available)}"
            )
    return [(i, d) for i, d in enumerate(config.domains) if not names or d.name in names]


def _prediction_name(example):
    stem = pathlib.PurePosixPath(example.key).name
    for suffix in ("_leftImg8bit",):
        stem = stem.removesuffix(suffix)
    return pathlib.PurePosixPath(example.key).parent / stem


def evaluate_domain(model, domain, examples, batch_size=4, predictions_dir=None,
                    colorized_dir=None, predictor=None):
    """Figures of ``model`` on ``examples`` of ``domain`` (every image, no padding).

    Each image is predicted by the model's one inference path (the domain's
    scale, as the model records it) and upsampled to its label's size.
    Validation during training calls this too, with its ``predictor``
    (an ``inference.DomainPredictor`` kept across validations: one trace).

    Returns a dict with ``miou``, ``per_class_iou`` (class name -> IoU or None),
    ``pixel_accuracy``, ``num_images``, ``num_pixels``, ``class_names`` and
    ``confusion_matrix`` (rows = truth, columns = prediction).
    """
    if not examples:
        raise ConfigError(f"domain {domain.name!r}: nothing to evaluate (the split is empty)")
    missing = [e.image for e in examples if not e.label]
    if missing:
        raise ConfigError(f"domain {domain.name!r}: no label for {missing[0]}")
    predictor = predictor or inference.DomainPredictor(model, domain.name)
    to_raw = train_to_raw(domain)
    confusion = np.zeros((domain.num_classes, domain.num_classes), np.int64)
    pairs = inference.load_examples(examples, domain.lookup_table())
    for batch in inference.same_size_batches(pairs, batch_size):
        images, labels = inference.stack(batch)
        predicted = predictor.class_ids(images, labels.shape[1:3])
        confusion += metrics_lib.confusion_matrix(labels, predicted, domain.num_classes)
        for (example, image, _), ids in zip(batch, predicted):
            name = _prediction_name(example)
            if predictions_dir is not None:
                path = pathlib.Path(predictions_dir) / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(to_raw[ids]).save(path)
            if colorized_dir is not None:
                path = pathlib.Path(colorized_dir) / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(domain.colorize(ids)).save(path)
    return _summary(domain, confusion, len(examples))


def score_predictions(domain, examples, prediction_paths):
    """The same figures for prediction PNGs in raw label ids, one per example.

    What the dataset's official scripts compute from submitted predictions;
    the tests use it to check parity with ``cityscapesscripts``.
    """
    table = domain.lookup_table()
    # A prediction of a raw id outside the label space (e.g. void) is an error
    # for the true class: it is counted in an extra column.
    outside = domain.num_classes
    confusion = np.zeros((outside + 1, outside + 1), np.int64)
    for example, path in zip(examples, prediction_paths, strict=True):
        label = table[np.asarray(Image.open(example.label))]
        predicted = table[np.asarray(Image.open(path))]
        if predicted.shape != label.shape:
            raise ConfigError(f"{path}: prediction is {predicted.shape[::-1]} pixels, "
                              f"its label {example.label} is {label.shape[::-1]}")
        predicted = np.where(predicted == domain_registry.IGNORE_LABEL, outside, predicted)
        confusion += metrics_lib.confusion_matrix(label, predicted, outside + 1)
    return _summary(domain, confusion, len(examples))


def _summary(domain, confusion, num_images):
    summary = metrics_lib.summarize(confusion, list(domain.class_names))
    summary.update(
        num_images=num_images,
        num_pixels=int(confusion.sum()),
        class_names=list(domain.class_names),
        confusion_matrix=confusion.tolist(),
    )
    return summary


def _export_predictors(saved_model, selected):
    """``{domain: SavedModelPredictor}`` for an export folder, or a one-line error."""
    import tensorflow as tf

    path = pathlib.Path(saved_model)
    if not (path / "saved_model.pb").is_file():
        raise ConfigError(f"--saved-model {path}: not an export (no saved_model.pb); "
                          "pass a version folder such as saved_models/usss/1")
    loaded = tf.saved_model.load(str(path))
    try:
        return {d.name: inference.SavedModelPredictor(loaded, d.name) for _, d in selected}
    except KeyError as error:
        raise ConfigError(f"--saved-model {path}: {error.args[0]}") from None


def labelled_colour_moments(config, manifest, names, echo=None):
    """``{domain: (mean, std)}``: each named domain's channel moments over the known
    pixels of the run's labelled draw (``manifest.json``), the reference of the
    ``decoder_colour_matched`` transfer figures. Only the folder the run read is
    read (nothing is generated or prepared for it); a domain whose labelled
    images cannot be read again is left out, with a note: its other figures stand."""
    moments = {}
    for index, domain_config in enumerate(config.domains):
        entry = manifest.get(domain_config.name) or {}
        if domain_config.name not in names or not entry.get("labeled"):
            continue
        domain = domain_registry.get_domain(domain_config.name)
        try:
            recorded = entry.get("root")
            if not recorded or not pathlib.Path(recorded).is_dir():
                raise ConfigError(f"the folder the run read ({recorded}) is not there")
            root = sources.run_root(domain_config, index, entry, (domain_config.train_split,))
            keys = set(entry["labeled"])
            listed = readers.list_examples(domain, root, domain_config.train_split, require_labels=False)
            matches_run, change = sources.split_matches_run(listed, domain_config.train_split, entry)
            if matches_run is False and echo:
                echo(f"warning: domain '{domain.name}': split '{domain_config.train_split}' in {root} is "
                     f"not the one the run saw ({change}); its colour-matched transfer figures use "
                     "the labelled images as they are now")
            examples = [e for e in listed if e.key in keys]
            if len(examples) != len(keys):
                raise ConfigError(f"{len(keys) - len(examples)} of its labelled images are gone")
            unlabelled = [e.image for e in examples if e.label is None]
            if unlabelled:
                raise ConfigError(f"{unlabelled[0]} has no label file now")
            moments[domain.name] = transfer.colour_reference(domain, examples)
        except (UsssError, *transfer.READ_ERRORS) as error:
            if echo:
                echo(f"note: domain '{domain.name}': no colour-matched transfer figures, its "
                     f"labelled images cannot be read again ({error})")
    return moments


def evaluate_run(run_dir, split="val", domains=None, batch_size=None, predictions_dir=None,
                 echo=None, saved_model=None):
    """Evaluates the run in ``run_dir`` on ``split`` of each (selected) domain.

    ``split`` is ``val`` (each domain's ``val_split``), ``train`` (its
    ``train_split``) or a split folder name. Predictions are written under
    ``predictions_dir/<domain>/{ids,color}/`` when given: ``ids`` in the
    dataset's raw label ids, ``color`` with the domain's palette.
    A ``supervised`` run is evaluated model by model, each on its own domain.
    ``saved_model`` (an export's version folder) scores that export instead of
    the run's checkpoint, on the run's data: the check that serving predicts
    what evaluation measured. A checkpoint's figures of a domain whose classes
    correspond to another domain's also have ``transfer``
    (``usss_tf.transfer.evaluate_transfer``; ``decoder_colour_matched`` in the
    colours of the target's labelled images: ``labelled_colour_moments``).
    Each domain's ``data`` says
    which folder and split were scored and whether they match the run's
    fingerprint of that split (``sources.split_matches_run``); a relative
    ``root`` is read from the folder the run recorded (``sources.run_root``),
    whatever the working directory.
    """
    run_dir = pathlib.Path(run_dir)
    config = runs.read_config(run_dir)
    selected = _select_domains(config, domains)
    if config.method == "supervised" and saved_model is None:
        results = {}
        for _, domain_config in selected:
            sub = RunDir(run_dir).supervised(domain_config.name).path
            results.update(evaluate_run(sub, split, [domain_config.name], batch_size,
                                        predictions_dir, echo))
        return results
    if saved_model is not None:
        model, predictors = None, _export_predictors(saved_model, selected)
    else:
        loaded = runs.load_run(run_dir)
        if not loaded.finished and echo:
            echo(f"note: {run_dir} has not finished; evaluating its {loaded.stage} checkpoint")
        model, predictors = loaded.model, {}
    batch_size = batch_size or config.data.eval_batch_size
    run = RunDir(run_dir, writable=False)
    manifest = run.read_json(MANIFEST, {})
    reference_moments = {}
    if model is not None:
        targets = transfer.corresponding_targets([d.name for _, d in selected], config.domain_names)
        reference_moments = labelled_colour_moments(config, manifest, targets, echo=echo)
    results = {}
    for index, domain_config in selected:
        domain = domain_registry.get_domain(domain_config.name)
        split_name = _split_name(domain_config, split)
        entry = manifest.get(domain.name) or run.supervised(domain.name).read_json(
            MANIFEST, {}).get(domain.name)  # a supervised run's export: its sub-runs' manifests
        root = sources.run_root(domain_config, index, entry, (split_name,), echo=echo)
        listed = readers.list_examples(domain, root, split_name, require_labels=False)
        matches_run, change = sources.split_matches_run(listed, split_name, entry)
        if matches_run is False and echo:
            echo(f"warning: domain '{domain.name}': split '{split_name}' in {root} is not the "
                 f"one the run saw ({change}); these figures are not comparable with the run's")
        examples = sources.evaluation_examples(
            domain, listed, split_name, getattr(config.data, "on_broken", "stop"), echo=echo)
        started = time.perf_counter()
        out = pathlib.Path(predictions_dir) / domain.name if predictions_dir else None
        results[domain.name] = evaluate_domain(
            model, domain, examples, batch_size,
            predictions_dir=out / "ids" if out else None,
            colorized_dir=out / "color" if out else None,
            predictor=predictors.get(domain.name),
        )
        results[domain.name]["data"] = {
            "root": str(root), "split": split_name, "matches_run": matches_run}
        if model is not None:
            transferred = transfer.evaluate_transfer(
                model, domain, examples, batch_size,
                with_embedding=method.has_label_centroids(config.method),
                targets=[d.name for d in config.domains if d.name != domain.name],
                reference_moments=reference_moments)
            if transferred:
                results[domain.name]["transfer"] = transferred
        if echo:
            echo(f"[evaluate] {domain.name}: {len(examples)} images in "
                 f"{time.perf_counter() - started:.1f}s")
    return results


def write_results(results, path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, results)


def format_report(results):
    """A per-domain table: mIoU, pixel accuracy, then every class's IoU."""
    lines = []
    for domain, r in results.items():
        lines.append(f"{domain}: mIoU {r['miou']:.4f}  pixel accuracy {r['pixel_accuracy']:.4f}  "
                     f"({r['num_images']} images)")
        for name, iou in r["per_class_iou"].items():
            lines.append(f"  {name:<16} {'   n/a' if iou is None else f'{iou:6.4f}'}")
        for target, ways in r.get("transfer", {}).items():
            lines.append(f"  in {target}'s label space ({len(next(iter(ways.values()))['per_class_iou'])} "
                         "corresponding classes): " + ", ".join(
                             f"{way} mIoU {figures['miou']:.4f}" for way, figures in ways.items()))
    return "\n".join(lines)
