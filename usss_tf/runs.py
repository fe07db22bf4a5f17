"""Reading a finished (or interrupted) run directory back: config, domains, model.

Export, evaluation and the inference benchmark all start from a run directory
written by ``usss_tf.train``. ``load_run`` rebuilds the model its config
describes and restores the weights of the last stage that has a checkpoint.
"""

import dataclasses
import json
import pathlib

import tensorflow as tf

from usss_tf import config as config_lib
from usss_tf import domains as domain_registry
from usss_tf.errors import ConfigError

# Checkpointed stages, latest first: the model after the last one is the result.
_STAGES_LATEST_FIRST = ("universal", "target", "centroids", "pretrain", "source")


@dataclasses.dataclass
class TrainedRun:
    """A run directory loaded for inference.

    Attributes:
      run_dir: the run directory.
      config: its ``ExperimentConfig``.
      model: the ``UniversalSegmenter`` with the restored weights (built).
      domains: the run's ``Domain`` objects, in the model's order.
      checkpoint: the checkpoint the weights come from.
      stage: the stage that checkpoint belongs to.
      finished: whether every stage of the run finished.
    """

    run_dir: pathlib.Path
    config: object
    model: object
    domains: list
    checkpoint: str
    stage: str
    finished: bool

    def domain(self, name):
        for domain in self.domains:
            if domain.name == name:
                return domain
        raise ConfigError(
            f"unknown domain {name!r} for run {self.run_dir}; "
            f"it has: {', '.join(d.name for d in self.domains)}"
        )


def read_config(run_dir):
    """The run's saved config; a clear error when ``run_dir`` is not a run."""
    run_dir = pathlib.Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml); train one with `usss-tf train`")
    return config_lib.load_config(path)


def final_checkpoint(run_dir):
    """(stage, checkpoint path) of the latest stage that saved a checkpoint."""
    run_dir = pathlib.Path(run_dir)
    for stage in _STAGES_LATEST_FIRST:
        path = tf.train.latest_checkpoint(str(run_dir / "checkpoints" / stage))
        if path:
            return stage, path
    raise ConfigError(f"{run_dir}: no checkpoint under {run_dir / 'checkpoints'}; the run never saved one")


def load_run(run_dir):
    """Rebuilds the run's model and restores its final weights (no strategy, no data)."""
    from usss_tf.model.segmenter import UniversalSegmenter

    run_dir = pathlib.Path(run_dir)
    config = read_config(run_dir)
    if config.method == "supervised":
        names = ", ".join(str(run_dir / "supervised" / d.name) for d in config.domains)
        raise ConfigError(
            f"{run_dir}: a 'supervised' run holds one model per domain; "
            f"use the per-domain run directories: {names}"
        )
    stage, checkpoint = final_checkpoint(run_dir)
    model = UniversalSegmenter.from_experiment(dataclasses.replace(
        config, model=dataclasses.replace(config.model, backbone_weights=None)
    ))
    model.build()
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    stages_path = run_dir / "stages.json"
    done = json.loads(stages_path.read_text()) if stages_path.exists() else {}
    finished = (run_dir / "metrics.json").exists() and bool(done)
    return TrainedRun(
        run_dir=run_dir,
        config=config,
        model=model,
        domains=[domain_registry.get_domain(d.name) for d in config.domains],
        checkpoint=checkpoint,
        stage=stage,
        finished=finished,
    )
