"""``usss-tf study``: a grid of runs, resumable, summarised as CSV, Markdown and a chart."""

import csv
import json

import pytest
import yaml
from click.testing import CliRunner

from usss_tf import study
from usss_tf.cli import main
from usss_tf.data import synthetic
from usss_tf.errors import ConfigError


def _grid(tmp_path, settings, **changes):
    roots = synthetic.write_synthetic_domains(
        tmp_path / "data", ("synth_city", "synth_camvid"), num_train=6, num_val=2, size=(32, 64)
    )
    base = {**settings, "domains": [{"name": n, "root": str(r)} for n, r in roots.items()]}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    grid = {"name": "tiny_study", "base": "base.yaml",
            # No masked stage: a traced stage per univ_full cell, and the study does not care.
            "set": {"train.masked_steps": 0, "train.pretrain_steps": 2, "train.steps": 0,
                    "train.checkpoint_every": 2},
            "methods": ["univ_basic"], "labeled": [2], "seeds": [0, 1], **changes}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_paired_differences_and_gap_recovery_pair_runs_by_seed():
    rows = [{"domain": "a", "method": m, "labeled": n, "seed": seed, "miou": v}
            for m, n, seed, v in [
                ("univ_basic", 2, 0, 0.20), ("univ_basic", 2, 1, 0.30),
                ("univ_full", 2, 0, 0.25), ("univ_full", 2, 1, 0.30),
                ("upper_bound", 60, 0, 0.40), ("upper_bound", 60, 1, 0.50)]]
    cell = study.paired(rows, "univ_basic")["a"]["univ_full"][2]
    assert cell["differences"] == pytest.approx({0: 0.05, 1: 0.0})
    assert cell["recovery"] == pytest.approx({0: 0.25, 1: 0.0})
    assert "univ_basic" not in study.paired(rows, "univ_basic")["a"]


def test_summary_is_mean_and_sample_std_over_seeds():
    rows = [{"domain": "a", "method": "m", "labeled": 5, "miou": v} for v in (0.2, 0.4, 0.6)]
    mean, std, count = study.summarize(rows)["a"]["m"][5]
    assert mean == pytest.approx(0.4) and std == pytest.approx(0.2) and count == 3


@pytest.mark.slow(seconds=60)
def test_study_runs_every_cell_and_resumes(tmp_path, tiny_run_settings):
    path = _grid(tmp_path, tiny_run_settings, methods=["univ_basic", "univ_full"], seeds=[0],
                 upper_bound=6)
    out = tmp_path / "study"
    result = CliRunner().invoke(main, ["study", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 2  # (upper bound + 2 methods) x 2 domains
    assert {(r["method"], r["labeled"]) for r in rows} == {
        ("upper_bound", "6"), ("univ_basic", "2"), ("univ_full", "2")}
    assert all(0.0 <= float(r["miou"]) <= 1.0 for r in rows)
    full = [r for r in rows if r["method"] == "univ_full"]
    assert {r["transfer_target"] for r in full} == {"synth_city", "synth_camvid"}
    for way in study.TRANSFER_WAYS:
        assert all(0.0 <= float(r[f"transfer_{way}_miou"]) <= 1.0 for r in full)
    markdown = (out / "results.md").read_text()
    assert "## synth_city" in markdown and "| univ_basic |" in markdown and "(n=1)" in markdown
    assert "| upper_bound (N = 6) |" in markdown and "Paired difference to univ_basic" in markdown
    assert "recovery" in markdown and "Transfer: synth_city's images" in markdown
    assert "Wall time per run" in markdown
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = (out / "upper_bound" / "n6" / "seed0" / "manifest.json").read_text()
    assert '"unlabeled": 6' in manifest  # Every image labelled; the unlabelled pool is all of them.

    again = CliRunner().invoke(main, ["study", str(path), "--out", str(out)])
    assert again.exit_code == 0 and again.output.count("done, skipping") == 3

    # Scored again with today's evaluate: a figure an older evaluate did not write comes back, the
    # others are the same (evaluation is deterministic), wall times kept.
    figures_path = out / "univ_full" / "n2" / "seed0" / "evaluation.json"
    figures = json.loads(figures_path.read_text())
    for r in figures["domains"].values():
        for ways in r["transfer"].values():
            del ways["decoder_colour_matched"]
    figures_path.write_text(json.dumps(figures))
    assert CliRunner().invoke(main, ["study", str(path), "--out", str(out)]).exit_code == 0
    with open(out / "results.csv") as handle:
        assert all(r["transfer_decoder_colour_matched_miou"] == ""
                   for r in csv.DictReader(handle) if r["method"] == "univ_full")
    assert " / — / " in (out / "results.md").read_text()  # decoder / (no colour-matched) / embedding
    rescored = CliRunner().invoke(main, ["study", str(path), "--out", str(out), "--re-evaluate"])
    assert rescored.exit_code == 0 and rescored.output.count("done, evaluating again") == 3, rescored.output
    with open(out / "results.csv") as handle:
        assert list(csv.DictReader(handle)) == rows

    # The grid changed since: a finished cell is refused, not reported as the new grid's.
    grid = yaml.safe_load(path.read_text())
    grid["set"]["train.learning_rate"] = 0.5
    path.write_text(yaml.safe_dump(grid))
    changed = CliRunner().invoke(main, ["study", str(path), "--out", str(out)])
    assert changed.exit_code != 0 and "done, skipping" not in changed.output
    assert "changed: train.learning_rate" in changed.output and "config.yaml" in changed.output


def test_grid_errors_name_the_file_and_key(tmp_path, tiny_run_settings):
    with pytest.raises(ConfigError, match="grid.yaml.*'methods'.*'magic'"):
        study.load_grid(_grid(tmp_path, tiny_run_settings, methods=["magic"]))
    with pytest.raises(ConfigError, match="grid.yaml.*'seeds'"):
        study.load_grid(_grid(tmp_path, tiny_run_settings, seeds=["one"]))
    with pytest.raises(ConfigError, match="unknown key.*colour"):
        study.load_grid(_grid(tmp_path, tiny_run_settings, colour="red"))
    with pytest.raises(ConfigError, match="tiny_study.*train.nonsense"):
        study.load_grid(_grid(tmp_path, tiny_run_settings, set={"train.nonsense": 1}))
    # A cell that would train unlabelled-image terms without unlabelled images
    # is refused when the grid is read, not when the study reaches it.
    with pytest.raises(ConfigError, match=r"cell univ_full/n2: key 'data.unlabeled_batch_size' is 0, "
                                          r"but loss.within_entropy \(0.1\)"):
        study.load_grid(_grid(tmp_path, tiny_run_settings, methods=["univ_basic", "univ_full"],
                              set={"data.unlabeled_batch_size": 0, "loss.within_entropy": 0.1,
                                   "train.steps": 2}))
    assert study.load_grid(_grid(tmp_path, tiny_run_settings, set={"data.unlabeled_batch_size": 0}))
