"""``usss-tf evaluate``: figures on every image, parity with cityscapesscripts."""

import copy
import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cityscapes_eval
from cityscapesscripts.helpers.labels import id2label
from PIL import Image

from usss_tf import evaluate
from usss_tf.cli import main
from usss_tf.data import layouts, readers
from usss_tf.domains import get_domain
from usss_tf.errors import DatasetError


def _official(predictions, ground_truth):
    """cityscapesscripts' pixel-level evaluation of prediction/label PNG lists."""
    args = copy.copy(cityscapes_eval.args)
    args.evalInstLevelScore = False
    args.quiet = True
    args.JSONOutput = False
    args.colorized = False
    return cityscapes_eval.evaluateImgLists([str(p) for p in predictions],
                                            [str(g) for g in ground_truth], args)


def _official_pixel_accuracy(result):
    matrix = np.asarray(result["confMatrix"], np.float64)
    evaluated = [i for i in range(len(matrix)) if i in id2label and not id2label[i].ignoreInEval]
    rows = matrix[evaluated]
    return float(np.trace(matrix[np.ix_(evaluated, evaluated)]) / rows.sum())


def _assert_parity(ours, official):
    assert abs(ours["miou"] - official["averageScoreClasses"]) < 1e-6
    for name, iou in ours["per_class_iou"].items():
        theirs = official["classScores"][name]
        if iou is None:
            assert math.isnan(theirs), name
        else:
            assert abs(iou - theirs) < 1e-6, name
    assert abs(ours["pixel_accuracy"] - _official_pixel_accuracy(official)) < 1e-6


def _write_cityscapes_labels(root, rng, cities=("aachen", "bonn"), per_city=3, size=(24, 40)):
    for city in cities:
        for i in range(per_city):
            image, label = layouts.CITYSCAPES.example_paths(root, "val", city, f"{city}_{i:06d}_000019")
            image.parent.mkdir(parents=True, exist_ok=True)
            label.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(image)
            # Every raw id, including void ones (0..6, 9, 10, ...).
            Image.fromarray(rng.integers(0, 34, size, dtype=np.uint8)).save(label)


def test_random_predictions_match_cityscapesscripts(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cityscapes"
    _write_cityscapes_labels(root, rng)
    domain = get_domain("cityscapes")
    examples = readers.list_examples(domain, root, "val")
    eval_ids = [raw for raw, train in domain.raw_to_train if train != 255]
    predictions = []
    for example in examples:
        shape = np.asarray(Image.open(example.label)).shape
        # Mostly evaluated classes, a few void predictions (errors for the truth).
        ids = rng.choice(eval_ids + [0, 4], size=shape).astype(np.uint8)
        path = tmp_path / "pred" / f"{example.key.replace('/', '_')}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(ids).save(path)
        predictions.append(path)
    ours = evaluate.score_predictions(domain, examples, predictions)
    _assert_parity(ours, _official(predictions, [e.label for e in examples]))
    assert ours["num_images"] == 6


def test_train_to_raw_inverts_the_label_map():
    domain = get_domain("cityscapes")
    to_raw = evaluate.train_to_raw(domain)
    table = domain.lookup_table()
    assert all(table[to_raw[t]] == t for t in range(domain.num_classes))


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    result = CliRunner().invoke(main, [
        "evaluate", str(tiny_run), "--json", str(out / "figures.json"),
        "--predictions", str(out / "predictions"), "--batch-size", "2",
    ])
    assert result.exit_code == 0, result.output
    return out, result.output, json.loads((out / "figures.json").read_text())


def test_evaluate_writes_the_figures_of_every_domain(evaluated, tiny_run):
    _, output, figures = evaluated
    assert set(figures) == {"synth_city", "synth_camvid"}
    for name, r in figures.items():
        domain = get_domain(name)
        assert 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["pixel_accuracy"] <= 1.0
        assert list(r["per_class_iou"]) == list(domain.class_names)
        assert r["num_images"] == 3
        assert np.asarray(r["confusion_matrix"]).shape == (domain.num_classes,) * 2
        assert np.asarray(r["confusion_matrix"]).sum() == r["num_pixels"] > 0
        assert f"{name}: mIoU {r['miou']:.4f}" in output


def test_model_predictions_match_cityscapesscripts_on_cityscapes_layout(evaluated, tiny_run):
    out, _, figures = evaluated
    domain = get_domain("synth_city")
    examples = readers.list_examples(domain, tiny_run.parent / "data" / "synth_city", "val")
    predictions = sorted((out / "predictions" / "synth_city" / "ids").rglob("*.png"))
    assert len(predictions) == len(examples) == 3
    by_stem = {p.stem: p for p in predictions}
    ordered = [by_stem[e.key.split("/")[-1].removesuffix("_leftImg8bit")] for e in examples]
    _assert_parity(figures["synth_city"], _official(ordered, [e.label for e in examples]))
    colored = list((out / "predictions" / "synth_city" / "color").rglob("*.png"))
    assert len(colored) == 3 and np.asarray(Image.open(colored[0])).shape[-1] == 3


def test_unknown_domain_and_not_a_run(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "--domain", "mars"])
    assert result.exit_code == 2 and "'mars'" in result.stderr and "synth_city" in result.stderr
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.stderr


def test_a_run_trained_with_skipped_files_evaluates_without_them(tiny_run, tmp_path):
    """``data.on_broken: skip`` holds for evaluation too; under ``stop`` the file is named."""
    base = tiny_run.parent
    shutil.copytree(base / "data", tmp_path / "data")
    run = shutil.copytree(tiny_run, tmp_path / "run")
    config = (run / "config.yaml").read_text().replace(str(base / "data"), str(tmp_path / "data"))
    assert "on_broken: stop" in config
    broken = sorted((tmp_path / "data" / "synth_camvid" / "valannot").glob("*.png"))[0]
    broken.write_bytes(b"not a PNG at all")
    (run / "config.yaml").write_text(config.replace("on_broken: stop", "on_broken: skip"))
    messages = []
    results = evaluate.evaluate_run(run, echo=messages.append)
    assert results["synth_camvid"]["num_images"] == 2 and results["synth_city"]["num_images"] == 3
    assert any("skipped 1 broken" in m and broken.name in m for m in messages), messages
    (run / "config.yaml").write_text(config)
    with pytest.raises(DatasetError, match=broken.name):
        evaluate.evaluate_run(run)


def _run_trained_with_relative_roots(tiny_run, base):
    """A copy of the tiny run as if trained in ``base`` with ``root: data/<domain>``."""
    shutil.copytree(tiny_run.parent / "data", base / "data")
    run = shutil.copytree(tiny_run, base / "run")
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace(str(tiny_run.parent / "data") + "/", "data/"))
    manifest = json.loads((run / "manifest.json").read_text())
    for name, entry in manifest.items():
        entry["root"] = str(base / "data" / name)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_a_relative_root_is_the_folder_the_run_read_whatever_the_working_directory(
        tiny_run, tmp_path, monkeypatch):
    run = _run_trained_with_relative_roots(tiny_run, tmp_path / "trained_here")
    assert "root: data/synth_camvid" in (run / "config.yaml").read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    results = evaluate.evaluate_run(run, domains=["synth_camvid"])
    assert results["synth_camvid"]["data"] == {
        "root": str(tmp_path / "trained_here" / "data" / "synth_camvid"),
        "split": "val", "matches_run": True}
    assert not (elsewhere / "data").exists()
    expected = json.loads((tiny_run / "metrics.json").read_text())
    assert results["synth_camvid"]["miou"] == pytest.approx(expected["synth_camvid"]["miou"])
    # A relative root edited to name other data is that data, from where the command runs.
    shutil.copytree(tmp_path / "trained_here" / "data", elsewhere / "edited")
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("data/synth_camvid", "edited/synth_camvid"))
    notes = []
    results = evaluate.evaluate_run(run, domains=["synth_camvid"], echo=notes.append)
    assert results["synth_camvid"]["data"]["root"] == str(elsewhere / "edited" / "synth_camvid")
    assert any(f"reading {elsewhere / 'edited' / 'synth_camvid'} now" in n for n in notes), notes


def test_evaluation_says_when_the_split_is_not_the_one_the_run_saw(tiny_run, tmp_path, monkeypatch):
    base = tmp_path / "trained_here"
    run = _run_trained_with_relative_roots(tiny_run, base)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["synth_camvid"]["root"] = str(tmp_path / "moved_away")
    (run / "manifest.json").write_text(json.dumps(manifest))
    domain_root = base / "data" / "synth_camvid"
    for folder in ("val", "valannot"):
        sorted((domain_root / folder).glob("*.png"))[0].unlink()
    monkeypatch.chdir(base)  # the recorded folder is gone: the config's root, from here
    notes = []
    results = evaluate.evaluate_run(run, domains=["synth_camvid"], echo=notes.append)
    assert results["synth_camvid"]["data"] == {
        "root": str(domain_root), "split": "val", "matches_run": False}
    assert results["synth_camvid"]["num_images"] == 2
    assert any(f"the run read {tmp_path / 'moved_away'}" in n for n in notes), notes
    assert any("warning: domain 'synth_camvid': split 'val'" in n
               and "3 files when the run saw it, 2 now" in n for n in notes), notes
    # The training split, untouched, is recorded too.
    results = evaluate.evaluate_run(run, split="train", domains=["synth_camvid"])
    assert results["synth_camvid"]["data"]["matches_run"] is True
    # A run of an older version recorded no fingerprints: nothing to compare, no warning.
    del manifest["synth_camvid"]["splits"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    notes = []
    results = evaluate.evaluate_run(run, domains=["synth_camvid"], echo=notes.append)
    assert results["synth_camvid"]["data"]["matches_run"] is None
    assert not any("warning" in n for n in notes), notes
