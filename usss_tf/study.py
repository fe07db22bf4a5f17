"""A study: methods x labelled-set sizes x seeds, run, evaluated and summarised.

A grid file names a base experiment config and the axes to sweep::

    name: synthetic_study
    base: ../pipelines/quickstart.yaml   # relative to the grid file
    set:                                 # overrides for every run (dotted keys)
      train.pretrain_steps: 150
    methods: [supervised, finetune, univ_basic, univ_full]
    labeled: [5, 10, 20]                 # N labelled images per domain
    seeds: [0, 1, 2]
    upper_bound: 60                      # optional: univ_basic with this N (every image labelled)
    baseline: univ_basic                 # what paired differences are taken against

Every cell is an ordinary run directory, ``<out>/<method>/n<N>/seed<S>/``, so a
study is resumed by running it again: finished runs are read back, an
interrupted one resumes from its checkpoint. After every run the study
rewrites ``results.csv`` (one row per run and domain), ``results.md``
(mean +- std of mIoU per method and N; with the baseline in the grid, the
paired difference to it per seed; with an upper bound, each method's gap
recovery ``(method - baseline) / (upper bound - baseline)``; the
cross-label-space transfer mIoU and the wall time per method) and
``results.png`` (mIoU against N per domain, one line per method).
"""

import csv
import dataclasses
import io
import json
import math
import pathlib
import time
import typing

import yaml

from usss_tf import config as config_lib
from usss_tf import run_dir as run_dir_lib
from usss_tf.errors import ConfigError

_GRID_KEYS = {"name", "base", "set", "methods", "labeled", "seeds", "out", "upper_bound", "baseline"}
UPPER_BOUND = "upper_bound"  # The cells of the fully-labelled reference (univ_basic runs).
CSV_FIELDS = ("method", "labeled", "seed", "domain", "miou", "pixel_accuracy", "num_images",
              "seconds", "transfer_target", "transfer_decoder_miou", "transfer_embedding_miou",
              "transfer_decoder_colour_matched_miou", "run_dir")
TRANSFER_WAYS = ("decoder", "decoder_colour_matched", "embedding")  # usss_tf.transfer's, table order


@dataclasses.dataclass
class Grid:
    """A parsed grid file."""

    name: str
    base: pathlib.Path
    overrides: dict
    methods: list
    labeled: list
    seeds: list
    out: pathlib.Path
    upper_bound: typing.Optional[int] = None
    baseline: str = "univ_basic"

    def cells(self):
        # Seeds outermost: a study stopped early still has every method and N.
        for seed in self.seeds:
            if self.upper_bound:
                yield UPPER_BOUND, self.upper_bound, seed
            for n in self.labeled:
                for method in self.methods:
                    yield method, n, seed

    def run_dir(self, method, n, seed):
        return self.out / method / f"n{n}" / f"seed{seed}"

    def config(self, method, n, seed):
        """The experiment config of one cell: base + overrides + the cell's values."""
        overrides = [f"{k}={_yaml_value(v)}" for k, v in self.overrides.items()]
        run_method = "univ_basic" if method == UPPER_BOUND else method
        overrides += [f"method={run_method}", f"seed={seed}", f"name={self.name}-{method}-n{n}-s{seed}"]
        base = config_lib.load_config(self.base)
        overrides += [f"domains.{i}.labeled={n}" for i in range(len(base.domains))]
        try:
            return config_lib.load_config(self.base, overrides)
        except ConfigError as error:
            raise ConfigError(f"grid {self.name!r}, cell {method}/n{n}/seed{seed}: {error}") from None


def _yaml_value(value):
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _int_list(raw, key, path, minimum):
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum
                             for v in values):
        raise ConfigError(f"{path}: key '{key}' must be a list of integers >= {minimum}, got {raw!r}")
    return values


def load_grid(path, out=None):
    """Reads and validates a grid file; errors name the file and key."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of grid keys")
    unknown = sorted(set(raw) - _GRID_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(_GRID_KEYS))}")
    if "base" not in raw:
        raise ConfigError(f"{path}: key 'base' (the experiment config to sweep) is required")
    base = (path.parent / str(raw["base"])).resolve()
    if not base.is_file():
        raise ConfigError(f"{path}: key 'base': config not found: {base}")
    methods = raw.get("methods", list(config_lib.METHODS))
    if not isinstance(methods, list) or not methods:
        raise ConfigError(f"{path}: key 'methods' must be a non-empty list")
    for method in methods:
        if method not in config_lib.METHODS:
            raise ConfigError(f"{path}: key 'methods': unknown method {method!r}; "
                              f"expected some of {', '.join(config_lib.METHODS)}")
    overrides = raw.get("set") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: key 'set' must be a mapping of dotted config keys to values")
    name = str(raw.get("name", path.stem))
    grid = Grid(
        name=name,
        base=base,
        overrides=overrides,
        methods=methods,
        labeled=_int_list(raw.get("labeled", [10]), "labeled", path, 1),
        seeds=_int_list(raw.get("seeds", [0]), "seeds", path, 0),
        out=pathlib.Path(out or raw.get("out") or pathlib.Path("runs") / name),
        upper_bound=_int_list(raw["upper_bound"], "upper_bound", path, 1)[0] if raw.get("upper_bound") else None,
        baseline=str(raw.get("baseline", "univ_basic")),
    )
    from usss_tf import method as method_lib

    cells = [(m, grid.labeled[0]) for m in grid.methods]
    if grid.upper_bound:
        cells.append((UPPER_BOUND, grid.upper_bound))
    for method, n in cells:  # Validates every override before hours of training.
        config = grid.config(method, n, grid.seeds[0])
        try:
            method_lib.check_unlabeled_stream(config)
        except ConfigError as error:
            raise ConfigError(f"grid {grid.name!r}, cell {method}/n{n}: {error}") from None
    return grid


def run_study(grid, devices=None, echo=print, jobs=1, shard=None, grid_path=None, re_evaluate=False):
    """Runs every cell not finished yet; returns the result rows.

    ``jobs > 1`` runs the cells in that many worker processes (each takes every
    ``jobs``-th cell): small models leave cores idle, and separate processes
    keep one run's failure or memory from touching another. ``shard=(i, n)``
    is what such a worker runs. ``re_evaluate`` scores the finished cells
    again with today's ``usss_tf.evaluate`` (their recorded wall time kept):
    for a study made before evaluation reported a figure it reports now.
    """
    grid.out.mkdir(parents=True, exist_ok=True)
    if jobs > 1:
        return _run_workers(grid, grid_path, jobs, devices, echo, re_evaluate)
    from usss_tf import evaluate as evaluate_lib
    from usss_tf import train as train_lib

    cells = list(grid.cells())
    for index, (method, n, seed) in enumerate(cells, 1):
        if shard and (index - 1) % shard[1] != shard[0]:
            continue
        run_dir = grid.run_dir(method, n, seed)
        figures_path = run_dir / run_dir_lib.EVALUATION
        config = grid.config(method, n, seed)
        if figures_path.exists():
            # Figures of a run the grid no longer describes are refused, not reported.
            run_dir_lib.RunDir(run_dir).check_config(config)
            if not re_evaluate:
                echo(f"[study {index}/{len(cells)}] {method} N={n} seed={seed}: done, skipping")
                continue
            echo(f"[study {index}/{len(cells)}] {method} N={n} seed={seed}: done, evaluating again")
            seconds = json.loads(figures_path.read_text())["seconds"]
            evaluate_lib.write_results(
                {"seconds": seconds, "domains": evaluate_lib.evaluate_run(run_dir, echo=echo)}, figures_path)
            _clear_session()
            continue
        echo(f"[study {index}/{len(cells)}] {method} N={n} seed={seed} -> {run_dir}")
        started = time.perf_counter()
        train_lib.run_experiment(config, run_dir, devices=devices, echo=echo)
        figures = evaluate_lib.evaluate_run(run_dir, echo=echo)
        seconds = round(time.perf_counter() - started, 1)
        evaluate_lib.write_results({"seconds": seconds, "domains": figures}, figures_path)
        _clear_session()
        if shard is None:
            write_reports(grid, collect_rows(grid))
    rows = collect_rows(grid)
    if shard is None:
        write_reports(grid, rows)
    return rows


def _run_workers(grid, grid_path, jobs, devices, echo, re_evaluate=False):
    import subprocess
    import sys

    if grid_path is None:
        raise ConfigError("study: jobs > 1 needs the grid file's path")
    # Data written on first use is written once, here, not raced by the workers.
    from usss_tf.data import sources

    first = grid.config(*next(grid.cells()))
    for index, domain in enumerate(first.domains):
        sources.resolve_root(domain, index)
    if isinstance(devices, (list, tuple)):
        devices = ",".join(devices)
    logs, workers = [], []
    for worker in range(jobs):
        log = open(grid.out / f"worker{worker}.log", "a")
        command = [sys.executable, "-m", "usss_tf.cli", "study", str(grid_path), "--out", str(grid.out),
                   "--shard", f"{worker}/{jobs}"]
        if devices is not None:
            command += ["--devices", str(devices)]
        if re_evaluate:
            command.append("--re-evaluate")
        workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        logs.append(log)
    echo(f"{jobs} workers started; logs in {grid.out}/worker*.log")
    failed = [i for i, w in enumerate(workers) if w.wait() != 0]
    for log in logs:
        log.close()
    rows = collect_rows(grid)
    write_reports(grid, rows)
    if failed:
        raise ConfigError(f"study: worker(s) {failed} failed; see {grid.out}/worker<i>.log "
                          "(re-running the study resumes)")
    return rows


def _clear_session():
    import keras

    keras.utils.clear_session(free_memory=True)


def collect_rows(grid):
    """One row per finished run and domain, from each run's ``evaluation.json``.

    ``transfer_*``: the domain's images in the label space of the first
    corresponding domain (``usss_tf.transfer``), empty when there is none.
    """
    rows = []
    for method, n, seed in grid.cells():
        run_dir = grid.run_dir(method, n, seed)
        path = run_dir / run_dir_lib.EVALUATION
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        for domain, r in result["domains"].items():
            transfer = sorted(r.get("transfer", {}).items())
            target, ways = transfer[0] if transfer else ("", {})
            rows.append({
                "method": method, "labeled": n, "seed": seed, "domain": domain,
                "miou": r["miou"], "pixel_accuracy": r["pixel_accuracy"],
                "num_images": r["num_images"], "seconds": result["seconds"],
                "transfer_target": target,
                **{f"transfer_{way}_miou": ways.get(way, {}).get("miou", "") for way in TRANSFER_WAYS},
                "run_dir": str(run_dir),
            })
    return rows


def _mean_std(values):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std, len(values)


def summarize(rows, key="miou"):
    """{domain: {method: {N: (mean, std, count)}}} of ``key`` (std over seeds, ddof=1)."""
    cells = {}
    for row in rows:
        if row.get(key, "") == "":
            continue
        cells.setdefault(row["domain"], {}).setdefault(row["method"], {}) \
             .setdefault(row["labeled"], []).append(float(row[key]))
    return {domain: {method: {n: _mean_std(values) for n, values in by_n.items()}
                     for method, by_n in methods.items()}
            for domain, methods in cells.items()}


def paired(rows, baseline, upper_bound=None):
    """Per domain, method and N: the per-seed differences to ``baseline`` (same N, same
    seed: the same labelled draw) and, with an upper bound, the per-seed gap recovery.

    Returns ``{domain: {method: {N: {"differences": {seed: d}, "recovery": {seed: r}}}}}``.
    """
    miou = {(r["domain"], r["method"], r["labeled"], r["seed"]): r["miou"] for r in rows}
    upper = {(r["domain"], r["seed"]): r["miou"] for r in rows if r["method"] == UPPER_BOUND}
    out = {}
    for (domain, method, n, seed), value in sorted(miou.items()):
        base = miou.get((domain, baseline, n, seed))
        if method in (baseline, UPPER_BOUND) or base is None:
            continue
        cell = out.setdefault(domain, {}).setdefault(method, {}).setdefault(
            n, {"differences": {}, "recovery": {}})
        cell["differences"][seed] = value - base
        top = upper.get((domain, seed))
        if top is not None and top - base > 1e-9:
            cell["recovery"][seed] = (value - base) / (top - base)
    return out


def _format_cell(value):
    if value is None:
        return "—"
    if value[2] == 1:  # No spread from a single run.
        return f"{100 * value[0]:.1f} (n=1)"
    return f"{100 * value[0]:.1f} ± {100 * value[1]:.1f} (n={value[2]})"


def _table_head(grid, caption, align="---:|"):
    """A caption line, a blank line and the header of a method x N table."""
    return [caption, "", "| method | " + " | ".join(f"N = {n}" for n in grid.labeled) + " |",
            "|---|" + align * len(grid.labeled)]


def format_markdown(grid, rows):
    table = summarize(rows)
    differences = paired(rows, grid.baseline)
    transfer = {way: summarize(rows, f"transfer_{way}_miou") for way in TRANSFER_WAYS}
    methods = ([UPPER_BOUND] if grid.upper_bound else []) + list(grid.methods)
    lines = [f"# {grid.name}", "",
             f"mIoU (%) on the full validation split, mean ± std over seeds {grid.seeds} "
             f"(n = runs finished per cell)."
             + (f" {UPPER_BOUND}: univ_basic with N = {grid.upper_bound} (every image labelled)."
                if grid.upper_bound else ""), ""]
    for domain, by_method in table.items():
        lines += _table_head(grid, f"## {domain}")
        for method in methods:
            if method == UPPER_BOUND:
                value = by_method.get(method, {}).get(grid.upper_bound)
                lines.append(f"| {method} (N = {grid.upper_bound}) | "
                             + " | ".join(_format_cell(value) for _ in grid.labeled) + " |")
                continue
            lines.append(f"| {method} | " + " | ".join(
                _format_cell(by_method.get(method, {}).get(n)) for n in grid.labeled) + " |")
        lines.append("")
        if differences.get(domain):
            lines += _table_head(grid, f"Paired difference to {grid.baseline} (points, per seed "
                                 f"{grid.seeds}), and gap recovery (method - baseline) / "
                                 "(upper bound - baseline):", align="---|")
            for method in grid.methods:
                cells = []
                for n in grid.labeled:
                    cell = differences[domain].get(method, {}).get(n)
                    if not cell:
                        cells.append("—")
                        continue
                    d = list(cell["differences"].values())
                    text = f"{100 * _mean_std(d)[0]:+.1f} ({', '.join(f'{100 * v:+.1f}' for v in d)})"
                    if cell["recovery"]:
                        text += f"; recovery {100 * _mean_std(list(cell['recovery'].values()))[0]:.0f}%"
                    cells.append(text)
                if any(c != "—" for c in cells):
                    lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
        targets = sorted({r["transfer_target"] for r in rows if r["domain"] == domain and r["transfer_target"]})
        if targets:
            lines += _table_head(grid, f"Transfer: {domain}'s images in {', '.join(targets)}'s label "
                                 "space (corresponding classes), mIoU (%) by that domain's decoder / "
                                 "by it on the images in its labelled images' colours / "
                                 "by the nearest label centroid (those a run has):")
            for method in grid.methods:
                cells = []
                for n in grid.labeled:
                    ways = [transfer[w].get(domain, {}).get(method, {}).get(n) for w in TRANSFER_WAYS]
                    ways = ways if any(v is not None for v in ways[2:]) else ways[:2]  # no centroids: no third
                    cells.append(" / ".join(_format_cell(v) for v in ways) if any(ways) else "—")
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    seconds = {}
    for row in rows:
        seconds.setdefault(row["method"], {})[(row["labeled"], row["seed"])] = float(row["seconds"])
    if seconds:
        lines += ["Wall time per run (s, training + evaluation): " + ", ".join(
            f"{method} {_mean_std(list(by_run.values()))[0]:.0f}" for method, by_run in seconds.items()), ""]
    return "\n".join(lines)


def write_chart(grid, rows, path):
    """mIoU against N, one panel per domain, one line (with std bars) per method."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    table = summarize(rows)
    if not table:
        return
    figure, axes = pyplot.subplots(1, len(table), figsize=(5 * len(table), 4), squeeze=False)
    for axis, (domain, methods) in zip(axes[0], table.items()):
        for method in grid.methods:
            points = sorted(methods.get(method, {}).items())
            if not points:
                continue
            axis.errorbar([n for n, _ in points], [100 * v[0] for _, v in points],
                          yerr=[100 * v[1] for _, v in points], marker="o", capsize=3, label=method)
        if grid.upper_bound and grid.upper_bound in methods.get(UPPER_BOUND, {}):
            mean = methods[UPPER_BOUND][grid.upper_bound][0]
            axis.axhline(100 * mean, color="gray", linestyle="--",
                         label=f"{UPPER_BOUND} (N = {grid.upper_bound})")
        axis.set_title(domain)
        axis.set_xlabel("labelled images per domain (N)")
        axis.set_ylabel("mIoU (%)")
        axis.set_xticks(grid.labeled)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(grid.name)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def write_reports(grid, rows):
    """``results.csv``, ``results.md`` and ``results.png`` in the study folder."""
    out = grid.out
    out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    run_dir_lib.write_text_atomic(out / "results.csv", table.getvalue())
    run_dir_lib.write_text_atomic(out / "results.md", format_markdown(grid, rows))
    write_chart(grid, rows, out / "results.png")
