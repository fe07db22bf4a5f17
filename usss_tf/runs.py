"""Reading a finished (or interrupted) run directory back: config, domains, model.

Export, evaluation and the inference benchmark all start from a run directory
written by ``usss_tf.train``. ``load_run`` rebuilds the model its config
describes and restores the weights of the last stage that has a checkpoint.
"""

import dataclasses
import pathlib

import tensorflow as tf

from usss_tf import domains as domain_registry
from usss_tf import method
from usss_tf import run_dir as run_dir_lib
from usss_tf.errors import ConfigError


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
      has_label_centroids: whether its centroid stage ran (the embedding branch is trained).
    """

    run_dir: pathlib.Path
    config: object
    model: object
    domains: list
    checkpoint: str
    stage: str
    finished: bool
    has_label_centroids: bool = False

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
    saved = run_dir_lib.RunDir(run_dir)
    if not saved.config_path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml); train one with `usss-tf train`")
    return saved.saved_config()


def final_checkpoint(run_dir, method_name=None):
    """(stage, checkpoint path) of the latest stage of the run's plan that saved a checkpoint."""
    run = run_dir_lib.RunDir(run_dir)
    method_name = method_name or read_config(run.path).method
    for stage in method.final_stages(method_name):
        path = run.latest_checkpoint(stage.name)
        if path:
            return stage.name, path
    raise ConfigError(f"{run.path}: no checkpoint under {run / run_dir_lib.CHECKPOINTS}; "
                      "the run never saved one")


def load_run(run_dir):
    """Rebuilds the run's model and restores its final weights (no strategy, no data)."""
    from usss_tf.model.segmenter import UniversalSegmenter

    run_dir = pathlib.Path(run_dir)
    config = read_config(run_dir)
    if config.method == "supervised":
        names = ", ".join(str(run_dir_lib.RunDir(run_dir).supervised(d.name).path) for d in config.domains)
        raise ConfigError(
            f"{run_dir}: a 'supervised' run holds one model per domain; "
            f"use the per-domain run directories: {names}"
        )
    stage, checkpoint = final_checkpoint(run_dir, config.method)
    # The weights come from the checkpoint; a keras-hub encoder still reads its
    # architecture from the preset folder.
    keep_preset = config.model.backbone == "hub"
    model = UniversalSegmenter.from_experiment(dataclasses.replace(
        config, model=dataclasses.replace(
            config.model, backbone_weights=config.model.backbone_weights if keep_preset else None)
    ))
    model.build()
    model.weights_checkpoint().restore(checkpoint).expect_partial()
    run = run_dir_lib.RunDir(run_dir)
    return TrainedRun(
        run_dir=run_dir,
        config=config,
        model=model,
        domains=[domain_registry.get_domain(d.name) for d in config.domains],
        checkpoint=checkpoint,
        stage=stage,
        finished=run.finished(),
        has_label_centroids=run.has_label_centroids(),
    )


def save_encoder(run_dir, out):
    """Writes a run's trained shared encoder as ``out`` (``.weights.h5``); returns its backbone name.

    Another experiment with the same ``model.backbone`` and ``model.width``
    starts from it through ``model.backbone_weights``.
    """
    out = pathlib.Path(out)
    if not out.name.endswith(".weights.h5"):
        raise ConfigError(f"--out {out}: the file name must end in .weights.h5")
    run = load_run(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    run.model.encoder.save_weights(str(out))
    return run.config.model.backbone
