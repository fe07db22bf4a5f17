"""The run directory: every file a run writes, named once, written atomically.

A run directory holds everything a run needs to be resumed and audited::

    config.yaml      the resolved config (re-running checks it is unchanged)
    run.json         seed, versions, devices, hue-free classes (data.augment.class_hue)
    manifest.json    the labelled subset of every domain (by example key)
    stages.json      finished stages with their step counts
    checkpoints/<stage>/   tf.train.CheckpointManager checkpoints (model + optimizer)
    centroids.json   the centroid stage's report (pixels per class, missing classes)
    tensorboard/{train,validation}/   event files; hparams and projector in tensorboard/
    metrics.json     the final validation figures per domain (written last: the run finished)
    evaluation.json  ``usss-tf evaluate``'s figures, when a study asked for them
    supervised/<domain>/   a ``supervised`` run's per-domain runs, each a run directory

Every JSON file is written to a temporary sibling and renamed into place, so a
reader (or a resumed run) never sees half a file.
"""

import contextlib
import json
import os
import pathlib
import shutil
import time
import uuid

import yaml

from usss_tf import config as config_lib
from usss_tf.errors import ConfigError

CONFIG = "config.yaml"
RUN_INFO = "run.json"
MANIFEST = "manifest.json"
STAGES_FILE = "stages.json"
CHECKPOINTS = "checkpoints"
CENTROIDS_REPORT = "centroids.json"
TENSORBOARD = "tensorboard"
METRICS = "metrics.json"
EVALUATION = "evaluation.json"
SUPERVISED = "supervised"


def write_text_atomic(path, text):
    """Writes ``text`` to ``path`` through a temporary sibling renamed into place."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path, payload):
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


@contextlib.contextmanager
def staged_folder(target):
    """Yields a path beside ``target`` to build a folder at, renamed to ``target`` on success.

    The path is hidden (TF Serving and ``version_folders`` skip names that
    start with ``.``) and does not exist yet: the caller creates it. Whatever
    fails inside, or a ``target`` that appeared meanwhile (FileExistsError),
    leaves nothing behind; readers of the parent never see a half-written folder.
    """
    target = pathlib.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".tmp-{target.name}-{uuid.uuid4().hex[:8]}")
    try:
        yield staging
        if target.exists():
            raise FileExistsError(f"{target} already exists")
        os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


class RunDir:
    """One run directory: its file names, its stage state, atomic writes.

    Args:
      path: the folder (created by ``create``, not by the constructor).
      writable: ``False`` for a worker of a multi-worker run other than the
        chief: it reads the run directory but every write is skipped.
    """

    def __init__(self, path, writable=True):
        self.path = pathlib.Path(path)
        self.writable = writable

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name):
        return self.path / name

    def create(self):
        if self.writable:
            self.path.mkdir(parents=True, exist_ok=True)
        return self

    # -- files ----------------------------------------------------------------------

    @property
    def config_path(self):
        return self.path / CONFIG

    @property
    def tensorboard(self):
        return self.path / TENSORBOARD

    def checkpoints(self, stage):
        return self.path / CHECKPOINTS / stage

    def supervised(self, domain):
        """The run directory of one domain's model in a ``supervised`` run."""
        return RunDir(self.path / SUPERVISED / domain, writable=self.writable)

    def save_config(self, config):
        """Saves ``config`` as ``config.yaml`` once ``check_config`` accepts it; returns ``self``."""
        self.check_config(config)
        if self.writable:
            write_text_atomic(self.config_path, config_lib.dump_config(config))
        return self

    def saved_config(self):
        """The ``ExperimentConfig`` in ``config.yaml``; keys of
        ``config.ADDED_WITH_EARLIER_BEHAVIOUR`` it lacks at their earlier value (what
        the run did), not at today's default."""
        return self._read_saved()[0]

    def _read_saved(self):
        """(``saved_config()``, the dotted keys ``config.yaml`` itself sets), one read."""
        written = set(config_lib.flatten(yaml.safe_load(self.config_path.read_text()) or {}))
        earlier = [f"{key}={value}" for key, value in config_lib.ADDED_WITH_EARLIER_BEHAVIOUR.items()
                   if key not in written]
        return config_lib.load_config(self.config_path, earlier), written

    def check_config(self, config):
        """Raises ``ConfigError`` unless ``config`` is the one this run directory was started with.

        A run directory started with a different config (other than keys that
        only change logging) is refused, naming each changed key with the run's
        value and the new one: resuming must not silently change the experiment.
        So is one whose ``config.yaml`` lacks keys this version has (written
        before they existed): what the run did for them is unknown, unless the
        key is in ``config.ADDED_WITH_EARLIER_BEHAVIOUR``, whose value is what
        every earlier version did, so the run's value. A run directory without
        ``config.yaml`` accepts any config.
        """
        saved = self.config_path
        if saved.exists():
            saved_config, written = self._read_saved()
            before = config_lib.flatten(saved_config.to_dict())
            after = config_lib.flatten(config.to_dict())
            missing = sorted(set(after) - written - config_lib.WATCH_ONLY_KEYS
                             - set(config_lib.ADDED_WITH_EARLIER_BEHAVIOUR))
            if missing:
                raise ConfigError(
                    f"{saved}: this run directory was written by an older usss-tf, without the "
                    f"keys {', '.join(missing)}; what the run did for them is not recorded, so it "
                    "is not resumed under today's defaults; use a new --run-dir"
                )
            changed = sorted(
                k for k in set(before) | set(after)
                if before.get(k) != after.get(k) and k not in config_lib.WATCH_ONLY_KEYS
            )
            if changed:
                values = ", ".join(f"{k} (the run: {before.get(k)!r}, now: {after.get(k)!r})" for k in changed)
                raise ConfigError(
                    f"{saved}: this run directory was started with a different config "
                    f"(changed: {values}); use a new --run-dir, or --set those keys to the run's values"
                )

    def read_json(self, name, default=None):
        path = self.path / name
        return json.loads(path.read_text()) if path.exists() else default

    def write_json(self, name, payload):
        if self.writable:
            write_json_atomic(self.path / name, payload)

    # -- stages ---------------------------------------------------------------------

    def stages_done(self):
        """``{stage: info}`` of the finished stages."""
        return self.read_json(STAGES_FILE, {})

    def mark_done(self, stage, **info):
        done = self.stages_done()
        done[stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self.write_json(STAGES_FILE, done)

    def has_label_centroids(self):
        """Whether the run's centroid stage finished (its model has fitted label centroids)."""
        from usss_tf import method

        return method.CENTROIDS in self.stages_done()

    def latest_checkpoint(self, stage):
        import tensorflow as tf

        return tf.train.latest_checkpoint(str(self.checkpoints(stage)))

    def finished(self):
        """Whether every stage ran: the final figures are written last."""
        return (self.path / METRICS).exists() and bool(self.stages_done())
