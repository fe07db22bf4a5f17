"""Runs an experiment: walks its method's stage plan in a run directory, resumably.

``Experiment`` prepares the run directory (``usss_tf.run_dir``), the data and
the model, then walks ``method.plan(config.method)``: training stages go to
the ``StageTrainer`` (``usss_tf.trainer``), the centroid stage to
``usss_tf.centroids``. After each step it checkpoints, refreshes centroids and
validates at the configured intervals. Validation is ``usss-tf evaluate``'s
code (``evaluate.evaluate_domain``) on the first ``data.max_val_images``
validation images. A ``supervised`` run is one ``Experiment`` per domain
(``run_experiment`` walks them), each in ``supervised/<domain>/``.

Re-running ``train`` on the same directory skips finished stages and resumes
the current one from its latest checkpoint; batches are a function of
(seed, step), so the resumed run sees the batches the killed one would have.
"""

import platform
import time

import keras
import numpy as np
import tensorflow as tf

from usss_tf import centroids as centroid_stage
from usss_tf import cluster
from usss_tf import evaluate as evaluate_lib
from usss_tf import inference, method
from usss_tf import precision, transfer
from usss_tf import run_dir as run_dir_lib
from usss_tf.callbacks import shows_progress
from usss_tf.data import pipeline, sources
from usss_tf.errors import ConfigError
from usss_tf.model.segmenter import UniversalSegmenter
from usss_tf.monitoring import RunMonitor
from usss_tf.trainer import StageTrainer, make_strategy

__all__ = ["Experiment", "format_results", "make_strategy", "run_experiment"]


def _versions():
    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version()}


class Experiment:
    """One run of a (non-``supervised``) config in a run directory; ``run()`` does every stage."""

    def __init__(self, config, run_dir, devices=None, echo=print, strategy=None):
        if config.method not in method.PLANS:
            raise ConfigError(f"method {config.method!r} has no stage plan; use run_experiment")
        self.config = config
        self.label_sets = transfer.label_sets(config.domain_names)
        # Under a multi-worker strategy only the chief writes the run directory.
        self.is_chief = cluster.is_chief(strategy)
        self.run_dir = run_dir_lib.RunDir(run_dir, writable=self.is_chief)
        self.devices = devices
        self.echo = echo if self.is_chief else (lambda *_: None)
        self.strategy = strategy
        self.model = None
        self.trainer = None
        self.inputs = None
        self.hue_free = None  # domain -> bool [C] under data.augment.class_hue, made by setup().
        self.monitor = None  # usss_tf.monitoring.RunMonitor, made by setup().
        self.confusions = {}  # domain -> confusion matrix of the latest evaluate().
        self._predictors = {}  # domain -> inference.DomainPredictor, traced once per run.
        self._last_validation = None  # (global step, results) of the latest validation logged.
        # {term: weight} of the terms that train on unlabelled images.
        self.unlabeled_terms = method.check_unlabeled_stream(config)
        if config.loss.cross_domain_supervision > 0 and len(config.domains) > 1 and not self.label_sets:
            self.echo(f"loss.cross_domain_supervision: no two of the domains ({', '.join(config.domain_names)}) "
                      "have corresponding classes (usss_tf.transfer.CORRESPONDENCES); the term is off")

    # -- setup ----------------------------------------------------------------------

    def _hue_free_classes(self):
        """{domain: bool [C]} of the classes whose labelled pixels turn hue
        (``data.augment.class_hue``), each domain's listed once; None when off."""
        augment = self.config.data.augment
        if not augment.class_hue:
            return None
        hue_free = {i.domain.name: pipeline.labelled_hue_free_classes(i, augment.class_hue_max_concentration)
                    for i in self.inputs}
        # A resumed run keeps the classes it started with, should another build of
        # TensorFlow put a class on the other side of the cut.
        recorded = self.run_dir.read_json(run_dir_lib.RUN_INFO, {}).get("hue_free_classes", {})
        names = self._hue_free_names(hue_free)
        for inputs in self.inputs:
            name = inputs.domain.name
            if name in recorded and recorded[name] != names[name]:
                self.echo(f"note: {name}: the labelled images give hue-free classes {names[name]} "
                          f"now; keeping the run's {recorded[name]}")
                hue_free[name] = np.array([c in recorded[name] for c in inputs.domain.class_names])
                names[name] = recorded[name]
        for domain, turned in names.items():
            self.echo(f"[data] {domain}: labelled crops turn the hue of {', '.join(turned) or 'no class'} "
                      "(data.augment.class_hue)")
        return hue_free

    def _hue_free_names(self, hue_free):
        """{domain: [class names]} of ``hue_free`` ({domain: bool [C]})."""
        return {i.domain.name: [n for n, free in zip(i.domain.class_names, hue_free[i.domain.name]) if free]
                for i in self.inputs}

    def setup(self):
        cfg = self.config
        self.run_dir.create().save_config(cfg)
        keras.utils.set_random_seed(cfg.seed)
        self.inputs = sources.prepare_domains(cfg, echo=self.echo)
        for index, inputs in enumerate(self.inputs):
            if self.unlabeled_terms and not inputs.unlabeled:
                self.echo(f"domains.{index}.unlabeled is 0: {', '.join(self.unlabeled_terms)} "
                          f"get no images of {inputs.domain.name}")
        self.hue_free = self._hue_free_classes()
        if self.is_chief:
            pipeline.write_manifest(
                self.run_dir / run_dir_lib.MANIFEST,
                {i.domain.name: i.manifest_entry() for i in self.inputs},
            )
        if self.strategy is None:
            self.strategy = make_strategy(self.devices)
        with self.strategy.scope():
            self.model = UniversalSegmenter.from_experiment(cfg)
            self.model.build()
        self.run_dir.write_json(run_dir_lib.RUN_INFO, {
            "seed": cfg.seed,
            "method": cfg.method,
            "devices": list(self.strategy.extended.worker_devices),
            "replicas": self.strategy.num_replicas_in_sync,
            "workers": cluster.num_workers(self.strategy),
            "precision": precision.resolve(cfg.train.precision),
            **_versions(),
            "parameters": int(self.model.count_params()),
            **({"hue_free_classes": self._hue_free_names(self.hue_free)} if self.hue_free else {}),
        })
        logs = self.run_dir.tensorboard
        if self.is_chief:
            self.train_writer = tf.summary.create_file_writer(str(logs / "train"))
            self.val_writer = tf.summary.create_file_writer(str(logs / "validation"))
        else:
            self.train_writer = self.val_writer = tf.summary.create_noop_writer()
        self.trainer = StageTrainer(
            self.model, self.strategy, self.run_dir, cfg.train, self.train_writer, echo=self.echo,
            encoder_lr_multiplier=cfg.train.encoder_lr_multiplier,
            freeze_encoder_batchnorm=cfg.train.freeze_encoder_batchnorm,
        )
        if self.is_chief:  # Other workers of a multi-worker run write no TensorBoard data.
            self.monitor = RunMonitor(
                logs, self.inputs, cfg, self.val_writer,
                has_centroids=self.run_dir.has_label_centroids,
                predictors=self._predictors,
            )
            self.monitor.write_hparams()

    # -- stages ---------------------------------------------------------------------

    def run(self):
        """Runs (or resumes) every stage of the plan; returns the final figures per domain."""
        if self.model is None:
            self.setup()
        cfg = self.config
        self.echo(
            f"run {self.run_dir.path}: method {cfg.method}, domains "
            f"{', '.join(f'{i.domain.name} ({len(i.labeled)} labelled, {len(i.unlabeled)} unlabelled)' for i in self.inputs)}, "
            f"{self.strategy.num_replicas_in_sync} replica(s), {self.model.count_params():,} parameters"
        )
        previous, offset = None, 0
        for stage in method.plan(cfg.method):
            if stage.fits_centroids:
                previous = self._centroid_stage(stage, previous, offset)
            else:
                steps = stage.steps(cfg.train)
                previous = self._train_stage(stage, steps, offset, previous)
                offset += steps
        self.trainer.restore_weights(previous)
        if self._last_validation is not None and self._last_validation[0] == offset:
            results = self._last_validation[1]  # The last stage ended on a validation: no repeat.
        else:
            results = self.evaluate()
            self._log_validation(results, offset)
        self._add_transfer(results, offset)
        self.run_dir.write_json(run_dir_lib.METRICS, results)
        return results

    def _objective(self, stage):
        """The ``method.Objective`` of training stage ``stage``."""
        return method.Objective(method.loss_weights(self.config.loss, stage),
                                num_domains=len(self.model.domains), consistency=self.config.consistency,
                                label_sets=self.label_sets,
                                cross_domain_colour=self.config.data.augment.cross_domain_colour)

    def _train_stage(self, stage, steps, offset, previous):
        """Trains ``stage`` for ``steps`` steps (resuming); returns its latest checkpoint."""
        if stage.name in self.run_dir.stages_done():
            self.echo(f"[{stage.name}] already finished, skipping")
            return self.run_dir.latest_checkpoint(stage.name) or previous
        if steps == 0:
            self.run_dir.mark_done(stage.name, steps=0)
            return previous
        cfg = self.config
        inputs = stage.select(self.inputs)
        # Restore before compiling: the previous stage's optimizer state must not leak.
        self.trainer.restore_weights(previous)
        objective = self._objective(stage)
        with_unlabeled = objective.uses_unlabeled
        consistency = cfg.consistency if objective.uses_consistency else None
        images_per_step = len(inputs) * (
            cfg.data.batch_size + (cfg.data.unlabeled_batch_size if with_unlabeled else 0))

        masked = cfg.masked_modelling if objective.uses_masked_auxiliary else None

        def batches(first_step, num_steps):
            if objective.uses_masking:
                return pipeline.masked_dataset(inputs, cfg.data, cfg.masked_modelling, cfg.seed,
                                               first_step, num_steps)
            return pipeline.train_dataset(inputs, cfg.data, cfg.seed, first_step, num_steps,
                                          with_unlabeled=with_unlabeled, consistency=consistency,
                                          strong_view=objective.weights["consistency_strong"] > 0,
                                          copy_paste=objective.weights["consistency_paste"] > 0,
                                          masked=masked, hue_free=self.hue_free)

        try:
            latest = self.trainer.train(
                stage.name, steps, offset, batches, objective,
                on_step=lambda step, save: self._on_step(stage, step, steps, offset, save),
                images_per_step=images_per_step,
            )
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError) as error:
            diagnosis = sources.diagnose_unreadable(self.inputs)
            if diagnosis is not None:
                raise diagnosis from error
            raise
        loss = self.trainer.last_logs.get("loss")
        self.run_dir.mark_done(stage.name, steps=steps, loss=loss)
        if stage.masked_modelling and loss is not None:  # No validation says how it went.
            self.echo(f"[{stage.name}] step {steps}/{steps}: reconstruction error {float(loss):.3f} "
                      "(sum over domains; TensorBoard: reconstruction/<domain>)")
        return latest

    def _on_step(self, stage, step, steps, offset, save):
        """Checkpoint, centroid refresh and validation at step ``step`` of ``stage``."""
        cfg = self.config
        if step % cfg.train.checkpoint_every == 0 or step == steps:
            save()
        refresh = cfg.centroids.refresh_every
        if stage.all_losses and method.has_label_centroids(cfg.method) and refresh and \
                step % refresh == 0 and step < steps:
            self._fit_centroids(refit_projection=False)
            save()
        if stage.masked_modelling:  # The decoders are untrained: no validation, reconstructions.
            if self.monitor:
                self.monitor.on_masked_step(self.model, step, steps, offset + step)
            return
        every = cfg.train.validation_every
        if step % every == 0 or step == steps:
            results = self.evaluate()
            self._log_validation(results, offset + step)
            if shows_progress(cfg.train.verbose):
                print()  # End the progress bar's line.
            self.echo(f"[{stage.name}] step {step}/{steps}: " + ", ".join(
                f"mIoU {d} {r['miou']:.3f}" for d, r in results.items()
            ))
        if self.monitor:
            self.monitor.on_step(self.model, step, offset + step)

    def _fit_centroids(self, refit_projection=True):
        cfg = self.config
        datasets = {
            i.domain.name: pipeline.eval_dataset(i.domain, i.labeled, cfg.data.eval_batch_size)
            for i in self.inputs
        }
        report = centroid_stage.initialize_entropy_module(
            self.model, datasets, cfg.centroids.pixels_per_class, cfg.seed,
            fit_projection_too=refit_projection,
        )
        for domain, info in report.items():
            if info["missing"]:
                names = [self._domain(domain).class_names[c] for c in info["missing"]]
                self.echo(f"[centroids] {domain}: no labelled pixel of {', '.join(names)}; "
                          "those classes keep random centroids")
        return report

    def _centroid_stage(self, stage, previous, global_step):
        if stage.name in self.run_dir.stages_done():
            self.echo(f"[{stage.name}] already finished, skipping")
            return self.run_dir.latest_checkpoint(stage.name)
        self.trainer.restore_weights(previous)
        started = time.perf_counter()
        report = self._fit_centroids(refit_projection=True)
        self.run_dir.write_json(run_dir_lib.CENTROIDS_REPORT, report)
        path = self.trainer.save_weights(stage.name)
        self.run_dir.mark_done(stage.name, seconds=round(time.perf_counter() - started, 2))
        if self.monitor:
            self.monitor.write_projector(self.model, global_step)
        self.echo(f"[{stage.name}] fitted {self.model.centroids_per_class} centroids per class "
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

    def _add_transfer(self, results, global_step):
        """Adds the cross-label-space transfer figures (``usss_tf.transfer``) of the final model
        to ``results`` and TensorBoard (``transfer/<A>_in_<B>/<way>``)."""
        references = {}
        targets = transfer.corresponding_targets(self.config.domain_names, self.config.domain_names)
        for inputs in self.inputs:
            name = inputs.domain.name
            if name not in targets or not inputs.labeled:
                continue
            try:
                references[name] = transfer.colour_reference(inputs.domain, inputs.labeled)
            except transfer.READ_ERRORS as error:
                self.echo(f"note: domain '{name}': no colour-matched transfer figures ({error})")
        for inputs in self.inputs:
            name = inputs.domain.name
            transferred = transfer.evaluate_transfer(
                self.model, inputs.domain, inputs.val, self.config.data.eval_batch_size,
                with_embedding=method.has_label_centroids(self.config.method),
                reference_moments=references)
            if not transferred:
                continue
            results[name]["transfer"] = transferred
            with self.val_writer.as_default(step=global_step):
                for target, ways in transferred.items():
                    for way, figures in ways.items():
                        tf.summary.scalar(f"transfer/{name}_in_{target}/{way}", figures["miou"])
        self.val_writer.flush()

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
        if self.monitor:
            self.monitor.on_validation(self.model, results, self.confusions, global_step)


def run_supervised(config, run_dir, devices=None, echo=print, strategy=None):
    """One independent single-domain run per domain, in ``supervised/<domain>/``.

    Each is a ``univ_basic`` run of that domain alone for ``pretrain_steps +
    steps`` steps (``method.supervised_domain_config``); the figures are
    gathered in ``run_dir``.
    """
    chief = cluster.is_chief(strategy)
    parent = run_dir_lib.RunDir(run_dir, writable=chief).create().save_config(config)
    parent.write_json(run_dir_lib.RUN_INFO, {
        "seed": config.seed,
        "method": config.method,
        "runs": {d.name: f"{run_dir_lib.SUPERVISED}/{d.name}" for d in config.domains},
        **_versions(),
    })
    done = parent.stages_done()
    results = {}
    for domain in config.domains:
        child = parent.supervised(domain.name)
        key = f"{run_dir_lib.SUPERVISED}/{domain.name}"
        if key in done and child.finished():
            echo(f"[supervised] {domain.name}: already finished, skipping")
            results.update(child.read_json(run_dir_lib.METRICS))
            continue
        echo(f"[supervised] {domain.name}: an independent model, labelled data only")
        sub_config = method.supervised_domain_config(config, domain)
        results.update(Experiment(sub_config, child.path, devices, echo, strategy=strategy).run())
        keras.utils.clear_session()  # The next domain's model starts from a clean slate.
        parent.mark_done(key, miou=results[domain.name]["miou"])
    parent.write_json(run_dir_lib.METRICS, results)
    return results


def run_experiment(config, run_dir, devices=None, echo=print, strategy=None):
    """Library entry point: runs ``config`` in ``run_dir``; returns figures per domain.

    ``strategy``: a ``tf.distribute`` strategy made at program start (e.g.
    ``cluster.multi_worker_strategy()`` for a ``TF_CONFIG`` cluster); default
    ``MirroredStrategy`` over ``devices``.
    """
    if config.method == "supervised":
        return run_supervised(config, run_dir, devices=devices, echo=echo, strategy=strategy)
    return Experiment(config, run_dir, devices=devices, echo=echo, strategy=strategy).run()


def format_results(results):
    lines = [f"{'domain':<16} {'mIoU':>6} {'pixel acc':>9}  images"]
    for domain, r in results.items():
        lines.append(f"{domain:<16} {r['miou']:>6.3f} {r['pixel_accuracy']:>9.3f}  {r['num_images']}")
    return "\n".join(lines)
