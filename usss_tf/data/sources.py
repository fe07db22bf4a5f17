"""From a config's domain entries to the example lists the pipelines read.

Resolves each domain's root (writing the synthetic domains when asked),
lists its splits with the layout's reader, draws the labelled subset and
checks every labelled example before training starts, so a broken file is
reported by name up front rather than as a tf.data error mid-run.
"""

import dataclasses
import pathlib

from usss_tf import domains as domain_registry
from usss_tf.data import readers
from usss_tf.data.pipeline import split_labeled
from usss_tf.errors import DatasetError


@dataclasses.dataclass
class DomainInputs:
    """Everything the pipelines need about one domain of a run."""

    domain: domain_registry.Domain
    root: pathlib.Path
    scale: float
    labeled: list
    unlabeled: list
    val: list

    def manifest_entry(self):
        return {
            "root": str(self.root),
            "labeled": [e.key for e in self.labeled],
            "unlabeled": len(self.unlabeled),
            "val": len(self.val),
        }


def resolve_root(domain_config, index, seed):
    """The domain's data folder; synthetic domains are written when ``generate`` is set."""
    root = pathlib.Path(domain_config.root).expanduser()
    if not root.exists() and domain_config.generate:
        from usss_tf.data import synthetic

        synthetic.write_synthetic_domain(domain_config.name, root, seed=seed)
    if not root.is_dir():
        hint = ""
        if domain_registry.get_domain(domain_config.name).synthetic:
            hint = " (run `usss-tf data synth` or set generate: true)"
        raise DatasetError(
            f"key 'domains.{index}.root': data folder for domain '{domain_config.name}' "
            f"not found: {root}{hint}"
        )
    return root.resolve()


def prepare_domains(config, check=True):
    """Lists, splits and checks every domain of ``config``; returns ``DomainInputs``."""
    prepared = []
    for index, d in enumerate(config.domains):
        domain = domain_registry.get_domain(d.name)
        root = resolve_root(d, index, config.seed)
        train = readers.list_examples(domain, root, d.train_split)
        val = readers.list_examples(domain, root, d.val_split)
        if config.data.max_val_images:
            val = sorted(val, key=lambda e: e.key)[: config.data.max_val_images]
        labeled, unlabeled = split_labeled(train, d.labeled, config.seed, d.name, d.unlabeled)
        if check:
            for example in labeled:
                readers.check_example(example, domain)
        prepared.append(DomainInputs(domain, root, d.scale, labeled, unlabeled, val))
    return prepared


def diagnose_unreadable(domain_inputs):
    """After a decode failure in tf.data: which files are broken, by name."""
    paths = []
    for inputs in domain_inputs:
        for example in inputs.labeled + inputs.unlabeled + inputs.val:
            paths.append(example.image)
            if example.label:
                paths.append(example.label)
    broken = readers.find_unreadable(sorted(set(paths)))
    if broken:
        listing = "; ".join(f"{path}: {reason}" for path, reason in broken[:5])
        more = f" (and {len(broken) - 5} more)" if len(broken) > 5 else ""
        return DatasetError(f"unreadable file(s) in the dataset: {listing}{more}")
    return None
