"""Runs an experiment: supervised pre-training -> label centroids -> universal training.

Stages per method (``config.method``):

* ``univ_full``: pretrain (supervised, all domains) -> centroids -> universal (all losses);
* ``univ_basic``: pretrain -> universal, supervised loss only (shared encoder);
* ``finetune``: source (the first domain, ``train.pretrain_steps``) -> target
  (the other domains, ``train.steps``), supervised loss only;
* ``supervised``: one independent ``univ_basic`` run per domain, labelled data only,
  in ``supervised/<domain>/`` (each a run directory of its own) for
  ``pretrain_steps + steps`` steps; the figures are gathered in this directory.

A run directory holds everything a run needs to be resumed and audited::

    config.yaml      the resolved config (re-running checks it is unchanged)
    run.json         seed, versions, devices
    manifest.json    the labelled subset of every domain (by example key)
    stages.json      finished stages with their step counts (written atomically)
    checkpoints/<stage>/   tf.train.CheckpointManager checkpoints (model + optimizer)
    centroids.json   the centroid stage's report (pixels per class, missing classes)
    tensorboard/{train,validation}/   event files
    tensorboard/     hparams, label-centroid projector (usss_tf.monitoring, usss_tf.projector)
    metrics.json     the final validation figures per domain

Re-running ``train`` on the same directory skips finished stages and resumes
the current one from its latest checkpoint; batches are a function of
(seed, step), so the resumed run sees the batches the killed one would have.
"""

import dataclasses
import json
import pathlib
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from usss_tf import centroids as centroid_stage
from usss_tf import config as config_lib
from usss_tf import evaluate as evaluate_lib
from usss_tf import inference
from usss_tf.callbacks import TrainingLogger, shows_progress
from usss_tf.data import pipeline, sources
from usss_tf.errors import ConfigError
from usss_tf.model.segmenter import UniversalSegmenter
from usss_tf.monitoring import RunMonitor

STAGES = ("pretrain", "centroids", "universal", "source", "target")


def _write_json(path, payload):
    tmp = pathlib.Path(f"{path}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False))
    tmp.replace(path)


def make_strategy(devices=None):
    """``MirroredStrategy`` over ``devices`` (names or a count), default all GPUs or the CPU."""
    if isinstance(devices, int):
        available = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        if devices > len(available):
            raise ConfigError(
                f"--devices {devices}: only {len(available)} device(s) visible: "
                f"{', '.join(d.name for d in available)}"
            )
        devices = [d.name for d in available[:devices]]
    elif devices:
        known = {d.name for d in tf.config.list_logical_devices()}
        for name in devices:
            full = name if name.startswith("/") else f"/device:{name.upper()}"
            if full not in known and name not in known:
                raise ConfigError(f"--devices: unknown device {name!r}; visible: {', '.join(sorted(known))}")
    else:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or ["/cpu:0"]
    return tf.distribute.MirroredStrategy(devices)


def _stage_loss_weights(config, stage):
    if stage != "universal" or config.method != "univ_full":
        return {"supervised": config.loss.supervised}
    return dataclasses.asdict(config.loss)


def _make_optimizer(train_config, steps):
    schedule = keras.optimizers.schedules.PolynomialDecay(
        train_config.learning_rate, decay_steps=max(steps, 1),
        end_learning_rate=train_config.learning_rate * 1e-2, power=train_config.poly_power,
    )
    if train_config.optimizer == "sgd":
        return keras.optimizers.SGD(
            schedule, momentum=train_config.momentum, weight_decay=train_config.weight_decay or None
        )
    return keras.optimizers.AdamW(schedule, weight_decay=train_config.weight_decay)


class Experiment:
    """One run of a config in a run directory; ``run()`` does all stages."""

    def __init__(self, config, run_dir, devices=None, echo=print):
        self.config = config
        self.run_dir = pathlib.Path(run_dir)
        self.devices = devices
        self.echo = echo
        self.strategy = None
        self.model = None
        self.inputs = None
        self.monitor = None  # usss_tf.monitoring.RunMonitor, made by setup().
        self.confusions = {}  # domain -> confusion matrix of the latest evaluate().
        self._predictors = {}  # domain -> inference.DomainPredictor, traced once per run.
        self._last_validation = None  # (global step, results) of the latest validation logged.

    # -- run directory --------------------------------------------------------------

    def _prepare_run_dir(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        saved = self.run_dir / "config.yaml"
        if saved.exists():
            previous = config_lib.load_config(saved)
            before = config_lib.flatten(previous.to_dict())
            after = config_lib.flatten(self.config.to_dict())
            changed = sorted(
                k for k in set(before) | set(after)
                if before.get(k) != after.get(k) and k not in config_lib.WATCH_ONLY_KEYS
            )
            if changed:
                raise ConfigError(
                    f"{saved}: this run directory was started with a different config "
                    f"(changed: {', '.join(changed)}); use a new --run-dir"
                )
        tmp = self.run_dir / "config.yaml.tmp"
        config_lib.save_config(self.config, tmp)
        tmp.replace(saved)

    def _stages_done(self):
        path = self.run_dir / "stages.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _mark_done(self, stage, **info):
        done = self._stages_done()
        done[stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        _write_json(self.run_dir / "stages.json", done)

    def _checkpoint_dir(self, stage):
        return self.run_dir / "checkpoints" / stage

    # -- setup ----------------------------------------------------------------------

    def setup(self):
        cfg = self.config
        self._prepare_run_dir()
        keras.utils.set_random_seed(cfg.seed)
        self.inputs = sources.prepare_domains(cfg, echo=self.echo)
        pipeline.write_manifest(
            self.run_dir / "manifest.json", {i.domain.name: i.manifest_entry() for i in self.inputs}
        )
        self.strategy = make_strategy(self.devices)
        with self.strategy.scope():
            self.model = UniversalSegmenter.from_experiment(cfg)
            self.model.build()
        _write_json(self.run_dir / "run.json", {
            "seed": cfg.seed,
            "method": cfg.method,
            "devices": list(self.strategy.extended.worker_devices),
            "replicas": self.strategy.num_replicas_in_sync,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
            "parameters": int(self.model.count_params()),
        })
        self.train_writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard" / "train"))
        self.val_writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard" / "validation"))
        self.monitor = RunMonitor(
            self.run_dir / "tensorboard", self.inputs, cfg, self.val_writer,
            has_centroids=lambda: "centroids" in self._stages_done(),
            predictors=self._predictors,
        )
        self.monitor.write_hparams()

    # -- stages ---------------------------------------------------------------------

    def run(self):
        """Runs (or resumes) every stage; returns the final figures per domain."""
        if self.config.method == "supervised":
            return self._run_supervised()
        if self.model is None:
            self.setup()
        cfg = self.config
        done = self._stages_done()
        self.echo(
            f"run {self.run_dir}: method {cfg.method}, domains "
            f"{', '.join(f'{i.domain.name} ({len(i.labeled)} labelled, {len(i.unlabeled)} unlabelled)' for i in self.inputs)}, "
            f"{self.strategy.num_replicas_in_sync} replica(s), {self.model.count_params():,} parameters"
        )
        previous = None
        if cfg.method == "finetune":
            source, targets = self.inputs[:1], self.inputs[1:]
            previous = self._train_stage("source", cfg.train.pretrain_steps, 0, previous, done, source)
            previous = self._train_stage(
                "target", cfg.train.steps, cfg.train.pretrain_steps, previous, done, targets
            )
        else:
            previous = self._train_stage("pretrain", cfg.train.pretrain_steps, 0, previous, done)
            if cfg.method == "univ_full":
                previous = self._centroid_stage(previous, done)
            previous = self._train_stage(
                "universal", cfg.train.steps, cfg.train.pretrain_steps, previous, done
            )
        self._restore_model(previous)
        final_step = cfg.train.pretrain_steps + cfg.train.steps
        if self._last_validation is not None and self._last_validation[0] == final_step:
            results = self._last_validation[1]  # The last stage ended on a validation: no repeat.
        else:
            results = self.evaluate()
            self._log_validation(results, final_step)
        _write_json(self.run_dir / "metrics.json", results)
        return results

    def _run_supervised(self):
        """One single-domain run per domain, each in ``supervised/<domain>/``."""
        self._prepare_run_dir()
        cfg = self.config
        _write_json(self.run_dir / "run.json", {
            "seed": cfg.seed,
            "method": cfg.method,
            "runs": {d.name: f"supervised/{d.name}" for d in cfg.domains},
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        })
        done = self._stages_done()
        results = {}
        for domain in cfg.domains:
            sub_dir = self.run_dir / "supervised" / domain.name
            if f"supervised/{domain.name}" in done and (sub_dir / "metrics.json").exists():
                self.echo(f"[supervised] {domain.name}: already finished, skipping")
                results.update(json.loads((sub_dir / "metrics.json").read_text()))
                continue
            sub_config = dataclasses.replace(
                cfg,
                name=f"{cfg.name}-{domain.name}",
                method="univ_basic",
                domains=[domain],
                train=dataclasses.replace(
                    cfg.train, pretrain_steps=cfg.train.pretrain_steps + cfg.train.steps, steps=0
                ),
            )
            self.echo(f"[supervised] {domain.name}: an independent model, labelled data only")
            sub = Experiment(sub_config, sub_dir, self.devices, self.echo)
            results.update(sub.run())
            keras.utils.clear_session()  # The next domain's model starts from a clean slate.
            self._mark_done(f"supervised/{domain.name}", miou=results[domain.name]["miou"])
        _write_json(self.run_dir / "metrics.json", results)
        return results

    def _restore_model(self, checkpoint_path):
        if checkpoint_path:
            tf.train.Checkpoint(model=self.model).restore(checkpoint_path).expect_partial()

    def _train_stage(self, stage, steps, offset, previous, done, inputs=None):
        """Trains ``stage`` for ``steps`` steps on ``inputs`` (default all domains), resuming."""
        inputs = inputs or self.inputs
        directory = self._checkpoint_dir(stage)
        if stage in done:
            self.echo(f"[{stage}] already finished, skipping")
            return tf.train.latest_checkpoint(str(directory)) or previous
        if steps == 0:
            self._mark_done(stage, steps=0)
            return previous
        cfg = self.config
        # Restore before compiling: the model tracks its optimizer, and the
        # previous stage's optimizer state must not leak into this one.
        self._restore_model(previous)
        with self.strategy.scope():
            optimizer = _make_optimizer(cfg.train, steps)
            self.model.compile(optimizer=optimizer, loss_weights=_stage_loss_weights(cfg, stage))
            # model.optimizer, not optimizer: under mixed_float16 compile wraps it
            # in a LossScaleOptimizer, whose loss scale is checkpointed too.
            self.model.optimizer.build(self.model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
        manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=2)
        if manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            self.echo(f"[{stage}] resuming from step {int(optimizer.iterations.numpy())}")
        step = int(optimizer.iterations.numpy())

        with_unlabeled = self.model.loss_weights_["within_entropy"] > 0 or \
            self.model.loss_weights_["cross_entropy"] > 0
        images_per_step = sum(
            cfg.data.batch_size + (cfg.data.unlabeled_batch_size if with_unlabeled else 0)
            for _ in inputs
        )
        logger = TrainingLogger(
            self.train_writer, stage, offset, cfg.train.log_every, images_per_step, steps,
            verbose=cfg.train.verbose,
        )
        logger.progbar and logger.progbar.update(step)
        if step < steps:
            dataset = pipeline.train_dataset(
                inputs, cfg.data, cfg.seed, step, steps - step, with_unlabeled=with_unlabeled
            )
            boundaries = _StageBoundaries(self, stage, steps, offset, manager)
            self._fit(dataset, steps - step, [logger, boundaries])
        self._mark_done(stage, steps=steps, loss=logger.last_logs.get("loss"))
        return manager.latest_checkpoint

    def _on_boundary(self, stage, step, steps, offset, manager):
        """Checkpoint, centroid refresh and validation at step ``step`` of ``stage``."""
        cfg = self.config
        if step % cfg.train.checkpoint_every == 0 or step == steps:
            manager.save(checkpoint_number=step)
        refresh = cfg.centroids.refresh_every
        if stage == "universal" and cfg.method == "univ_full" and refresh and \
                step % refresh == 0 and step < steps:
            self._fit_centroids(refit_projection=False)
            manager.save(checkpoint_number=step)
        every = cfg.train.eval_every or cfg.train.checkpoint_every
        if step % every == 0 or step == steps:
            results = self.evaluate()
            self._log_validation(results, offset + step)
            if shows_progress(cfg.train.verbose):
                print()  # End the progress bar's line.
            self.echo(f"[{stage}] step {step}/{steps}: " + ", ".join(
                f"mIoU {d} {r['miou']:.3f}" for d, r in results.items()
            ))
        self.monitor.on_step(self.model, step, offset + step)

    def _fit(self, dataset, num_steps, callbacks):
        try:
            self.model.fit(
                dataset, steps_per_epoch=num_steps, epochs=1, verbose=0, callbacks=callbacks,
                shuffle=False,
            )
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError) as error:
            diagnosis = sources.diagnose_unreadable(self.inputs)
            if diagnosis is not None:
                raise diagnosis from error
            raise

    def _centroid_datasets(self):
        return {
            i.domain.name: pipeline.eval_dataset(
                i.domain, i.labeled, self.config.data.eval_batch_size
            )
            for i in self.inputs
        }

    def _fit_centroids(self, refit_projection=True):
        cfg = self.config
        report = centroid_stage.initialize_entropy_module(
            self.model, self._centroid_datasets(), cfg.centroids.pixels_per_class, cfg.seed,
            fit_projection_too=refit_projection,
        )
        for domain, info in report.items():
            if info["missing"]:
                names = [self._domain(domain).class_names[c] for c in info["missing"]]
                self.echo(f"[centroids] {domain}: no labelled pixel of {', '.join(names)}; "
                          "those classes keep random centroids")
        return report

    def _centroid_stage(self, previous, done):
        directory = self._checkpoint_dir("centroids")
        if "centroids" in done:
            self.echo("[centroids] already finished, skipping")
            return tf.train.latest_checkpoint(str(directory))
        self._restore_model(previous)
        started = time.perf_counter()
        report = self._fit_centroids(refit_projection=True)
        _write_json(self.run_dir / "centroids.json", report)
        self.monitor.write_projector(self.model, self.config.train.pretrain_steps)
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=self.model), str(directory), 1)
        path = manager.save(checkpoint_number=0)
        self._mark_done("centroids", seconds=round(time.perf_counter() - started, 2))
        self.echo(f"[centroids] fitted {self.model.centroids_per_class} centroids per class "
                  f"in {time.perf_counter() - started:.1f}s")
        return path

    # -- evaluation -----------------------------------------------------------------

    def _domain(self, name):
        return next(i.domain for i in self.inputs if i.domain.name == name)

    def evaluate(self):
        """Validation figures per domain: mIoU, per-class IoU, pixel accuracy.

        The same function as ``usss-tf evaluate`` (``evaluate.evaluate_domain``)
        on the first ``data.max_val_images`` validation images, with one traced
        predictor per domain kept across validations.
        """
        results = {}
        for inputs in self.inputs:
            name = inputs.domain.name
            summary = evaluate_lib.evaluate_domain(
                self.model, inputs.domain, inputs.val, self.config.data.eval_batch_size,
                predictor=inference.cached_predictor(self._predictors, self.model, name),
            )
            self.confusions[name] = np.asarray(summary.pop("confusion_matrix"), np.int64)
            results[name] = summary
        return results

    def _log_validation(self, results, global_step):
        self._last_validation = (global_step, results)
        with self.val_writer.as_default(step=global_step):
            for domain, r in results.items():
                tf.summary.scalar(f"miou/{domain}", r["miou"])
                tf.summary.scalar(f"pixel_accuracy/{domain}", r["pixel_accuracy"])
                for name, iou in r["per_class_iou"].items():
                    if iou is not None:
                        tf.summary.scalar(f"iou/{domain}/{name}", iou)
        self.val_writer.flush()
        self.monitor.on_validation(self.model, results, self.confusions, global_step)


class _StageBoundaries(keras.callbacks.Callback):
    """Calls back into the experiment after every step that ends an interval."""

    def __init__(self, experiment, stage, steps, offset, manager):
        super().__init__()
        self.args = (experiment, stage, steps, offset, manager)

    def on_train_begin(self, logs=None):
        self.first_step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        # The step is derived, not read from the optimizer: no per-step host sync.
        experiment, stage, steps, offset, manager = self.args
        experiment._on_boundary(stage, self.first_step + batch + 1, steps, offset, manager)


def run_experiment(config, run_dir, devices=None, echo=print):
    """Library entry point: runs ``config`` in ``run_dir``; returns figures per domain."""
    return Experiment(config, run_dir, devices=devices, echo=echo).run()


def format_results(results):
    lines = [f"{'domain':<16} {'mIoU':>6} {'pixel acc':>9}  images"]
    for domain, r in results.items():
        lines.append(f"{domain:<16} {r['miou']:>6.3f} {r['pixel_accuracy']:>9.3f}  {r['num_images']}")
    return "\n".join(lines)
