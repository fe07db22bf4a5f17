"""From a config's domain entries to the example lists the pipelines read.

Resolves each domain's root (writing the synthetic domains, or materialising
a TFDS source, when asked), lists its splits with the layout's reader, draws
the labelled subset and checks the examples before training starts, so a
broken file is reported by name up front rather than as a tf.data error
mid-run (see `usss_tf.data.checks` for what is checked, how deep, and why).

``data.on_broken`` decides what a broken example does: ``stop`` (default)
ends the run with a message naming the file(s); ``skip`` leaves the example
out, and the run's ``manifest.json`` records how many were skipped and which.
The manifest also records each domain's folder and a fingerprint of its
splits (`usss_tf.data.identity`), so a resumed run or an evaluation knows
whether it reads the data the run saw.
"""

import dataclasses
import pathlib

from usss_tf import domains as domain_registry
from usss_tf.config import ON_BROKEN
from usss_tf.data import checks, identity, readers
from usss_tf.data.pipeline import split_labeled
from usss_tf.errors import ConfigError, DatasetError


@dataclasses.dataclass
class DomainInputs:
    """Everything the pipelines need about one domain of a run.

    ``skipped`` holds the `checks.Broken` examples left out under
    ``on_broken: skip``; it is empty under ``stop`` (a broken example stops
    the run instead).
    """

    domain: domain_registry.Domain
    root: pathlib.Path
    scale: float
    labeled: list
    unlabeled: list
    val: list
    skipped: list = dataclasses.field(default_factory=list)
    on_broken: str = "stop"
    splits: dict = dataclasses.field(default_factory=dict)  # split name -> fingerprint

    def manifest_entry(self):
        entry = {
            "root": str(self.root),
            "labeled": [e.key for e in self.labeled],
            "unlabeled": len(self.unlabeled),
            "val": len(self.val),
            "splits": self.splits,
        }
        # Only under skip, so manifests of runs that never skip keep their
        # content (a resumed run compares its manifest with the saved one).
        if self.on_broken == "skip":
            entry["num_skipped"] = len(self.skipped)
            entry["skipped"] = [b.to_json() for b in self.skipped]
        return entry


def resolve_root(domain_config, index, echo=None, splits=None):
    """The domain's data folder, in its layout.

    A synthetic domain whose folder is missing is written when ``generate`` is
    set, always with the generator's default seed (``usss-tf data synth``'s):
    the dataset is the same whichever run writes it first, so the run's seed
    draws the labelled images and the training, never the images themselves.
    An existing folder is used as it is. A ``source: tfds``
    domain is prepared with TFDS and materialised as files (`tfds_source`)
    for `splits` (default: its train and val splits).
    """
    if getattr(domain_config, "source", "folder") == "tfds":
        from usss_tf.data import tfds_source

        return tfds_source.materialize(
            domain_config.name,
            domain_config.root,
            splits or (domain_config.train_split, domain_config.val_split),
            manual_dir=domain_config.manual_dir,
            echo=echo,
            where=f"key 'domains.{index}'",
        )
    root = pathlib.Path(domain_config.root).expanduser()
    if not root.exists() and domain_config.generate:
        from usss_tf.data import synthetic

        synthetic.write_synthetic_domain(domain_config.name, root)
    if not root.is_dir():
        hint = ""
        if domain_registry.get_domain(domain_config.name).synthetic:
            hint = " (run `usss-tf data synth` or set generate: true)"
        raise DatasetError(
            f"key 'domains.{index}.root': data folder for domain '{domain_config.name}' "
            f"not found: {root}{hint}"
        )
    return root.resolve()


def run_root(domain_config, index, entry, splits, echo=None):
    """The folder a finished run's domain is read from again (``usss-tf evaluate``).

    ``entry`` is the domain's entry of the run's ``manifest.json`` (or None).
    A relative ``root`` in the config names a folder relative to where the
    run was trained. While the folder the run recorded exists and is that
    relative path's, it is used, so the figures do not depend on the
    working directory of the command; for a TFDS source the recorded
    folder's data_dir is used, materialising any of ``splits`` the run did
    not. Otherwise (an absolute ``root``, or a relative one edited to name
    other data; the recorded folder gone) the config's ``root`` is resolved
    as training resolved it, with a note when that is not the recorded
    folder.
    """
    recorded = (entry or {}).get("root")
    named = _recorded_relative_root(domain_config, recorded) if recorded else None
    if named is not None:
        if getattr(domain_config, "source", "folder") != "tfds":
            return named
        domain_config = dataclasses.replace(domain_config, root=str(named))
    root = resolve_root(domain_config, index, echo=echo, splits=splits)
    if recorded and str(root) != recorded and echo is not None:
        echo(f"note: domain '{domain_config.name}': the run read {recorded}; "
             f"reading {root} now")
    return root


def _recorded_relative_root(domain_config, recorded):
    """The folder the config's relative ``root`` named when the run recorded ``recorded``
    (for TFDS: the data_dir it was materialised from), if it still exists; else None."""
    relative = pathlib.PurePath(domain_config.root)
    named = pathlib.Path(recorded)
    if relative.is_absolute() or domain_config.root.startswith("~") or not named.is_dir():
        return None
    if getattr(domain_config, "source", "folder") == "tfds":
        from usss_tf.data import tfds_source

        named = tfds_source.materialized_data_dir(domain_config.name, recorded)
    wanted = tuple(p for p in relative.parts if p != ".")
    if named is None or not wanted or ".." in wanted or named.parts[-len(wanted):] != wanted:
        return None
    return named


def split_matches_run(listed, split, entry):
    """Whether ``split``, as ``listed`` now, matches the run's fingerprint: (True | False | None, reason).

    ``listed`` is the split's examples as the reader lists them
    (``require_labels=False``, before any check). None when the run recorded
    no fingerprint of that split (a split other than its training and
    validation ones, or a run of an older version).
    """
    recorded = ((entry or {}).get("splits") or {}).get(split)
    if recorded is None:
        return None, ""
    current = identity.fingerprint(listed)
    if current == recorded:
        return True, ""
    return False, identity.describe_change(recorded, current)


class _Triage:
    """Runs the checks on one domain's examples and applies ``on_broken``."""

    def __init__(self, domain, on_broken):
        if on_broken not in ON_BROKEN:
            raise ConfigError(
                f"key 'data.on_broken': expected one of {', '.join(ON_BROKEN)}, got {on_broken!r}"
            )
        self.domain = domain
        self.on_broken = on_broken
        self.skipped = []

    def keep(self, examples, split, **depth):
        """`examples` without the broken ones; under ``stop`` a broken one raises."""
        broken = checks.find_broken(examples, self.domain, split, **depth)
        if not broken:
            return list(examples)
        if self.on_broken == "stop":
            raise DatasetError(
                f"domain '{self.domain.name}', split '{split}': {len(broken)} broken "
                f"example(s) (set data.on_broken: skip to leave them out): "
                f"{checks.describe(broken)}"
            )
        self.skipped.extend(broken)
        bad = {b.key for b in broken}
        return [e for e in examples if e.key not in bad]

    def first(self, examples, count, split, **depth):
        """The first `count` usable `examples` in order (all when `count` is None)."""
        if count is None:
            return self.keep(examples, split, **depth)
        kept, rest = [], list(examples)
        while rest and len(kept) < count:
            chunk, rest = rest[: count - len(kept)], rest[count - len(kept):]
            kept += self.keep(chunk, split, **depth)
        return kept


def _draw_labeled(domain_config, train, seed, triage):
    """The seeded labelled draw over the usable examples, each drawn one fully checked.

    Under ``skip`` a drawn example that fails the full check is left out and
    the draw is repeated over what remains, so the same data and seed always
    give the same subset.
    """
    verified = set()
    while True:
        if domain_config.labeled > len(train):
            skipped = len(triage.skipped)
            raise ConfigError(
                f"domain '{domain_config.name}': asked for {domain_config.labeled} labelled "
                f"images but the training split has only {len(train)}"
                + (f" usable ones ({skipped} broken skipped)" if skipped else "")
            )
        labeled, unlabeled = split_labeled(
            train, domain_config.labeled, seed, domain_config.name, domain_config.unlabeled
        )
        todo = [e for e in labeled if e.key not in verified]
        good = triage.keep(
            todo, domain_config.train_split, decode_images=True, decode_labels=True
        )
        verified.update(e.key for e in good)
        if len(good) == len(todo):
            return labeled, unlabeled
        bad = {e.key for e in todo} - verified
        train = [e for e in train if e.key not in bad]


def prepare_domain(config, index, check=True, echo=None):
    """Lists, checks and splits domain ``config.domains[index]``; returns `DomainInputs`.

    With ``check=False`` nothing is decoded: the splits are listed strictly
    (every image must have a label) and used as they are.
    """
    d = config.domains[index]
    domain = domain_registry.get_domain(d.name)
    root = resolve_root(d, index, echo=echo)
    on_broken = getattr(config.data, "on_broken", "stop")
    max_val = config.data.max_val_images
    if not check:
        train = readers.list_examples(domain, root, d.train_split)
        val = sorted(readers.list_examples(domain, root, d.val_split), key=lambda e: e.key)
        labeled, unlabeled = split_labeled(train, d.labeled, config.seed, d.name, d.unlabeled)
        return DomainInputs(
            domain, root, d.scale, labeled, unlabeled, val[:max_val] if max_val else val,
            on_broken=on_broken, splits=_fingerprints(d, train, val),
        )
    triage = _Triage(domain, on_broken)
    train = readers.list_examples(domain, root, d.train_split, require_labels=False)
    val = readers.list_examples(domain, root, d.val_split, require_labels=False)
    splits = _fingerprints(d, train, val)
    train = triage.keep(train, d.train_split)
    val = triage.first(
        sorted(val, key=lambda e: e.key), max_val or None, d.val_split, decode_labels=True
    )
    if not val:
        raise DatasetError(
            f"domain '{d.name}': no usable validation image in split '{d.val_split}' "
            f"({len(triage.skipped)} broken skipped)"
        )
    labeled, unlabeled = _draw_labeled(d, train, config.seed, triage)
    if triage.skipped and echo is not None:
        echo(
            f"[data] {d.name}: skipped {len(triage.skipped)} broken example(s) "
            "(data.on_broken: skip; all listed in manifest.json): "
            + checks.describe(triage.skipped, 3)
        )
    return DomainInputs(
        domain, root, d.scale, labeled, unlabeled, val, skipped=triage.skipped,
        on_broken=on_broken, splits=splits,
    )


def _fingerprints(domain_config, train, val):
    """The fingerprints of the splits as listed, before any example is left out."""
    return {
        domain_config.train_split: identity.fingerprint(train),
        domain_config.val_split: identity.fingerprint(val),
    }


def evaluation_examples(domain, listed, split, on_broken="stop", echo=None):
    """Every labelled example of ``split`` for evaluation, triaged as training triages.

    ``listed`` is the split as the reader lists it (``require_labels=False``).
    Under ``data.on_broken: skip`` the examples that fail the checks
    (validation's depth: headers, and labels decoded) are left out and
    counted, so a run trained with broken files skipped evaluates on the same
    usable files; under ``stop`` a broken one is an error naming the file.
    """
    triage = _Triage(domain, on_broken)
    kept = triage.keep(sorted(listed, key=lambda e: e.key), split, decode_labels=True)
    if triage.skipped and echo is not None:
        echo(f"[data] {domain.name}: skipped {len(triage.skipped)} broken example(s) of split "
             f"'{split}' (data.on_broken: skip): " + checks.describe(triage.skipped, 3))
    if not kept:
        raise DatasetError(f"domain '{domain.name}': no usable labelled image in split '{split}'")
    return kept


def prepare_domains(config, check=True, echo=None):
    """Lists, checks and splits every domain of ``config``; returns ``DomainInputs``.

    Args:
        config: an `ExperimentConfig`.
        check: run the file checks and apply ``data.on_broken``.
        echo: ``echo(line)`` for one-line notes (skipped examples, TFDS
            preparation); None stays quiet.
    """
    return [prepare_domain(config, i, check, echo) for i in range(len(config.domains))]


def diagnose_unreadable(domain_inputs):
    """After a decode failure in tf.data: which files are broken, by name."""
    paths = []
    for inputs in domain_inputs:
        for example in inputs.labeled + inputs.unlabeled + inputs.val:
            paths.append(example.image)
            if example.label:
                paths.append(example.label)
    broken = checks.find_unreadable(sorted(set(paths)))
    if broken:
        listing = "; ".join(f"{path}: {reason}" for path, reason in broken[:5])
        more = f" (and {len(broken) - 5} more)" if len(broken) > 5 else ""
        return DatasetError(
            f"unreadable file(s) in the dataset: {listing}{more} (the start-up check reads "
            "only the headers of unlabelled and validation images; remove or replace these files)"
        )
    return None
