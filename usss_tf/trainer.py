"""The trainer: runs one training stage of a model, resumably; knows nothing of the method.

``StageTrainer.train`` compiles the model with a fresh optimizer and the
stage's ``method.Objective``, restores the stage's latest checkpoint if there
is one, and fits the batches the stage has left, calling ``on_step(step,
save)`` after every step (the experiment checkpoints, validates and refreshes
centroids there). One checkpointed counter, set to the step at every save,
says how far a stage got: resume and intervals count batches, also when a mixed_float16 loss
scale skips an optimizer update (``optimizer.iterations`` does not advance then).
"""

import shutil
import tempfile

import keras
import tensorflow as tf

from usss_tf import cluster
from usss_tf.callbacks import TrainingLogger
from usss_tf.errors import ConfigError
from usss_tf.optimizer import make_optimizer


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


def freeze_batchnorm(encoder):
    """Freezes every BatchNorm layer of ``encoder``: statistics and scale/offset stay as loaded.

    Keras runs a non-trainable BatchNormalization in inference mode, so small
    training batches no longer replace the pretrained statistics.
    """
    frozen = 0
    for layer in encoder._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


class StageTrainer:
    """Trains ``model`` one stage at a time under ``strategy``, with checkpoints in a run directory.

    Args:
      model: a built ``UniversalSegmenter`` (created in ``strategy.scope()``).
      strategy: a ``tf.distribute`` strategy.
      run_dir: the ``RunDir`` (checkpoints go to ``checkpoints/<stage>/``).
      train_config: ``TrainConfig`` (optimizer, intervals, logging).
      writer: the ``tf.summary`` writer for per-step scalars.
      echo: ``echo(line)`` for one-line notes.
      encoder_lr_multiplier: the encoder's learning rate relative to the rest.
      freeze_encoder_batchnorm: keep the encoder's BatchNorm statistics and
        affine weights as loaded (inference mode), for small batches.
    """

    def __init__(self, model, strategy, run_dir, train_config, writer, echo=print,
                 encoder_lr_multiplier=1.0, freeze_encoder_batchnorm=False):
        self.model = model
        self.strategy = strategy
        self.run_dir = run_dir
        self.config = train_config
        self.writer = writer
        self.echo = echo
        self.last_logs = {}
        self.encoder_lr_multiplier = encoder_lr_multiplier
        self.is_chief = cluster.is_chief(strategy)
        self._barrier = None
        if freeze_encoder_batchnorm:
            freeze_batchnorm(model.encoder)

    def restore_weights(self, checkpoint_path):
        """Loads the model's weights (not the optimizer) from a checkpoint path, if any.

        A stage's next optimizer starts fresh, whether or not this process trained the
        stage before (``UniversalSegmenter.weights_checkpoint``)."""
        if checkpoint_path:
            self.model.weights_checkpoint().restore(checkpoint_path).expect_partial()

    def _restore(self, checkpoint, step, path):
        """Restores a stage checkpoint; those written before the step counter existed use
        the optimizer's iterations."""
        names = {name for name, _ in tf.train.list_variables(path)}
        if any(name.startswith("step/") for name in names):
            checkpoint.restore(path).assert_existing_objects_matched()
        else:
            tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer).restore(
                path).assert_existing_objects_matched()
            step.assign(self.model.optimizer.iterations)

    def barrier(self):
        """Waits until every worker gets here (a collective no-op); nothing on one machine.

        After the chief wrote a checkpoint, the others may read it.
        """
        if cluster.num_workers(self.strategy) > 1:
            if self._barrier is None:
                self._barrier = cluster.barrier_function(self.strategy)
            with cluster.watch("waiting for every worker (barrier)"):
                self._barrier()

    def save_weights(self, stage):
        """Checkpoints the model's weights as stage ``stage`` (step 0); returns the chief's path."""
        checkpoint = self.model.weights_checkpoint()
        manager = tf.train.CheckpointManager(checkpoint, str(self.run_dir.checkpoints(stage)), 1)
        self._save(checkpoint, manager, 0)
        self.barrier()  # The chief's file is on disk for every worker.
        return tf.train.latest_checkpoint(str(self.run_dir.checkpoints(stage)))

    def _distributed_step(self):
        """One training step on every replica (``model.train_step``), logs averaged over replicas.

        An explicit ``strategy.run`` loop instead of ``Model.fit``: the same
        code runs under MirroredStrategy and MultiWorkerMirroredStrategy, where
        Keras 3's ``fit`` fails (keras-team/keras#20585). Traced without
        autograph: the step has no Python control flow on tensors (Keras 3 is
        backend-agnostic; ours uses ``tf.cond``/``tf.where``), and autograph's
        source conversion was half of the step's trace time. Same graph, same
        results; a tensor used as a Python bool fails loudly at trace time.
        """
        model, strategy = self.model, self.strategy

        def step(batches):
            logs = strategy.run(model.train_step, args=(next(batches),))
            return {key: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                    for key, value in logs.items()}

        return tf.function(step, jit_compile=False, autograph=False)

    def _save(self, checkpoint, manager, number):
        """Writes a checkpoint: the chief into the run directory; another worker
        (every one must take part in saving) to a temporary folder it deletes."""
        if self.is_chief:
            manager.save(checkpoint_number=number)
            return
        scratch = tempfile.mkdtemp(prefix="usss-worker-checkpoint-")
        try:
            checkpoint.write(f"{scratch}/ckpt")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def train(self, stage, steps, offset, make_dataset, objective, on_step, images_per_step):
        """Trains (or resumes) ``stage`` for ``steps`` steps; returns its latest checkpoint path.

        Args:
          stage: the stage's name (its checkpoint folder and TensorBoard prefix).
          steps: the stage's optimizer steps.
          offset: the global step of this stage's step 0.
          make_dataset: ``(first_step, num_steps) -> tf.data.Dataset`` of the stage's batches.
          objective: the stage's ``method.Objective``.
          on_step: ``on_step(step, save)`` after every step (1-based, within the
            stage); ``save()`` writes a checkpoint at that step.
          images_per_step: images a step consumes, for the images/s scalar.
        """
        cfg = self.config
        self.model.objective = objective
        with self.strategy.scope():
            self.model.compile(optimizer=make_optimizer(
                cfg, steps, self.model.encoder.trainable_variables, self.encoder_lr_multiplier))
            # model.optimizer, not the optimizer passed: under mixed_float16 compile
            # wraps it in a LossScaleOptimizer, whose loss scale is checkpointed too.
            self.model.optimizer.build(self.model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="stage_step")
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer, step=step)
        manager = tf.train.CheckpointManager(
            checkpoint, str(self.run_dir.checkpoints(stage)), max_to_keep=2)
        if manager.latest_checkpoint:
            self._restore(checkpoint, step, manager.latest_checkpoint)
            self.echo(f"[{stage}] resuming from step {int(step.numpy())}")
        start = int(step.numpy())
        logger = TrainingLogger(
            self.writer, stage, offset, cfg.log_every, images_per_step, steps, verbose=cfg.verbose,
            first_step=start,
        )
        if start < steps:
            def save_at(current):
                step.assign(current)  # Only when saving: nothing extra on the per-step path.
                self._save(checkpoint, manager, current)

            batches = iter(self.strategy.experimental_distribute_dataset(
                make_dataset(start, steps - start)))
            train_step = self._distributed_step()
            logger.on_train_begin()
            for done in range(steps - start):
                with cluster.watch(f"[{stage}] training step {start + done + 1}"):
                    logs = train_step(batches)
                logger.on_train_batch_end(done, logs)
                current = start + done + 1
                on_step(current, lambda current=current: save_at(current))
        self.last_logs = logger.last_logs
        self.barrier()  # The chief's last checkpoint is on disk for every worker.
        return tf.train.latest_checkpoint(str(self.run_dir.checkpoints(stage)))
