"""The trainer, in process: a stage stopped after a checkpoint resumes to the uninterrupted result."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from usss_tf import config as config_lib
from usss_tf import precision
from usss_tf.method import Objective
from usss_tf.model.segmenter import UniversalSegmenter
from usss_tf.run_dir import RunDir
from usss_tf.optimizer import make_optimizer
from usss_tf.trainer import StageTrainer, freeze_batchnorm

DOMAINS = {"a": 3, "b": 4}
TRAIN = config_lib.TrainConfig(pretrain_steps=4, steps=0, optimizer="sgd", learning_rate=0.05,
                               log_every=1, verbose=0)


def batches(first_step, num_steps):
    """Step ``i``'s batch is a pure function of ``i`` (as the real pipeline's are)."""

    def batch(i):
        seed = tf.stack([tf.cast(i, tf.int32), 7])
        out = {}
        for k, (name, classes) in enumerate(DOMAINS.items()):
            images = tf.random.stateless_uniform([2, 16, 32, 3], seed + k, 0, 255)
            labels = tf.random.stateless_uniform([2, 16, 32], seed + 10 + k, 0, classes, tf.int32)
            out[name] = {"images": images, "labels": labels}
        return out

    return tf.data.Dataset.range(first_step, first_step + num_steps).map(batch)


class Stop(Exception):
    pass


def train(run_dir, stop_after=None, policy="float32", strategy=None, depth=0.25, **trainer_options):
    """Trains stage ``s`` (4 steps, a checkpoint every 2); raises ``Stop`` after ``stop_after``."""
    keras.utils.set_random_seed(0)
    strategy = strategy or tf.distribute.get_strategy()
    with precision.dtype_policy(policy), strategy.scope():
        model = UniversalSegmenter(DOMAINS, width=0.125, depth=depth, embedding_dim=8,
                                   centroids_per_class=2)
        model.build()
    writer = tf.summary.create_file_writer(str(run_dir / "tensorboard"))
    trainer = StageTrainer(model, strategy, RunDir(run_dir), TRAIN, writer,
                           echo=lambda *_: None, **trainer_options)
    seen = []

    def on_step(step, save):
        seen.append(step)
        if step % 2 == 0:
            save()
        if step == stop_after:
            raise Stop

    try:
        trainer.train("s", 4, 0, batches, Objective(), on_step, images_per_step=4)
    except Stop:
        pass
    return model, seen


@pytest.mark.slow
def test_a_stopped_stage_resumes_where_its_checkpoint_left_it(tmp_path):
    full, seen = train(tmp_path / "full")
    assert seen == [1, 2, 3, 4]
    _, seen = train(tmp_path / "stopped", stop_after=3)  # Killed after step 3; checkpoint at 2.
    assert seen == [1, 2, 3]
    resumed, seen = train(tmp_path / "stopped")
    assert seen == [3, 4]  # Step 3 is done again: it was never checkpointed.
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_stage_checkpoint_restores_every_weight_and_no_optimizer_state(tmp_path):
    """A stage started in a new process (a run resumed before the stage's first checkpoint)
    starts as in the process that ran the stage before: from all of the previous stage's
    weights and a fresh optimizer, not the previous optimizer's step count and moments."""
    strategy = tf.distribute.get_strategy()
    writer = tf.summary.create_noop_writer()

    def segmenter(seed):
        keras.utils.set_random_seed(seed)
        model = UniversalSegmenter(DOMAINS, width=0.125, depth=0.25, embedding_dim=8,
                                   centroids_per_class=2, reconstruction=True)
        model.build()
        return model

    def compiled(model):
        model.compile(optimizer=make_optimizer(TRAIN, 4))
        model.optimizer.build(model.trainable_variables)
        return model.optimizer

    trained = segmenter(0)
    previous = compiled(trained)
    previous.iterations.assign(3)
    for momentum in previous.momentums:
        momentum.assign(tf.ones_like(momentum))
    path = StageTrainer(trained, strategy, RunDir(tmp_path), TRAIN, writer,
                        echo=lambda *_: None).save_weights("pretrain")

    fresh = segmenter(1)
    StageTrainer(fresh, strategy, RunDir(tmp_path), TRAIN, writer, echo=lambda *_: None).restore_weights(path)
    assert len(fresh.get_weights()) == len(trained.get_weights())
    for a, b in zip(trained.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    optimizer = compiled(fresh)
    assert int(optimizer.iterations.numpy()) == 0
    assert not any(np.any(m.numpy()) for m in optimizer.momentums)


def test_make_optimizer_reads_the_config():
    sgd = make_optimizer(TRAIN, 10)
    assert isinstance(sgd, keras.optimizers.SGD) and float(sgd.momentum) == pytest.approx(0.9)
    adamw = make_optimizer(config_lib.TrainConfig(optimizer="adamw", weight_decay=1e-3), 10)
    assert isinstance(adamw, keras.optimizers.AdamW)


@pytest.mark.slow
def test_a_skipped_mixed_float16_step_still_counts_for_resume(tmp_path):
    """The loss-scale optimizer skips the updates whose scaled gradients overflow
    (its initial scale, 2**15, is too high for the full-depth ERFNet's gradients here;
    the shallow one's fit), so ``optimizer.iterations`` lags the batches; the stage's
    own counter does not."""
    model, _ = train(tmp_path / "run", stop_after=2, policy="mixed_float16", depth=1.0)
    assert int(model.optimizer.iterations.numpy()) < 2  # At least one of 2 updates skipped.
    _, seen = train(tmp_path / "run", policy="mixed_float16", depth=1.0)
    assert seen == [3, 4]  # Resumed after batch 2, not replaying it.


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_encoder_multiplier_scales_its_whole_update(optimizer):
    encoder, head = tf.Variable([1.0, -2.0]), tf.Variable([1.0, -2.0])
    config = config_lib.TrainConfig(optimizer=optimizer, momentum=0.0, learning_rate=0.1,
                                    weight_decay=0.01)
    opt = make_optimizer(config, 10, [encoder], 0.1)
    gradient = tf.constant([0.5, -0.25])
    opt.apply([gradient, gradient], [encoder, head])
    moved_encoder = np.array([1.0, -2.0]) - encoder.numpy()
    moved_head = np.array([1.0, -2.0]) - head.numpy()
    np.testing.assert_allclose(moved_encoder, 0.1 * moved_head, rtol=1e-4)  # float32 differences of ~2.


def _train_variables(make_optimizers, steps=4):
    """Variables [a, b] after traced SGD/Adam steps under MirroredStrategy; ``make_optimizers(a, b)``
    returns ``[(optimizer, variables it updates), ...]``."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        variables = [tf.Variable([1.0, -2.0]), tf.Variable([[0.5], [3.0]])]
        optimizers = make_optimizers(*variables)

    @tf.function
    def step(scale):
        def replica():
            for opt, updated in optimizers:
                opt.apply([tf.reshape(scale * tf.range(tf.size(v), dtype=tf.float32), v.shape) - v
                           for v in updated], updated)
        strategy.run(replica)

    for scale in (0.5, -0.25, 1.0, 2.0)[:steps]:
        step(tf.constant(scale))
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_with_multiplier_one_the_updates_equal_keras_own(optimizer):
    """The step's learning rate and Adam's bias correction are computed once per step, not per
    variable: the same values as Keras' optimizer, bit for bit, over decaying traced steps."""
    config = config_lib.TrainConfig(optimizer=optimizer, momentum=0.9, learning_rate=0.1,
                                    weight_decay=0.01)
    schedule = keras.optimizers.schedules.PolynomialDecay(0.1, 5, 1e-3, power=0.9)
    reference = {"sgd": lambda: keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=0.01),
                 "adamw": lambda: keras.optimizers.AdamW(schedule, weight_decay=0.01)}[optimizer]
    ours = _train_variables(lambda a, b: [(make_optimizer(config, 5), [a, b])])
    keras_own = _train_variables(lambda a, b: [(reference(), [a, b])])
    for mine, theirs in zip(ours, keras_own):
        np.testing.assert_array_equal(mine, theirs)
    assert not np.array_equal(ours[0], [1.0, -2.0])


def test_adamw_with_a_multiplier_equals_keras_adamw_at_the_multiplied_rate():
    config = config_lib.TrainConfig(optimizer="adamw", learning_rate=0.1, weight_decay=0.01)
    ours = _train_variables(lambda a, b: [(make_optimizer(config, 5, [a], 0.25), [a, b])])

    def keras_pair(a, b):
        def adamw(rate):
            return keras.optimizers.AdamW(
                keras.optimizers.schedules.PolynomialDecay(rate, 5, rate * 1e-2, power=0.9),
                weight_decay=0.01)
        return [(adamw(0.025), [a]), (adamw(0.1), [b])]

    for mine, theirs in zip(ours, _train_variables(keras_pair)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6)


def test_a_zero_multiplier_and_frozen_batchnorm_keep_the_encoder_as_it_was(tmp_path):
    """Through the real trainer under MirroredStrategy: the encoder (weights and BN statistics)
    stays bit for bit, the decoders learn."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    keras.utils.set_random_seed(0)
    with strategy.scope():
        reference = UniversalSegmenter(DOMAINS, width=0.125, depth=0.25, embedding_dim=8,
                                       centroids_per_class=2)
        reference.build()
    model, _ = train(tmp_path, strategy=strategy, encoder_lr_multiplier=0.0,
                     freeze_encoder_batchnorm=True)
    for before, after in zip(reference.encoder.weights, model.encoder.weights):
        np.testing.assert_array_equal(before.numpy(), after.numpy(), err_msg=after.path)
    changed = [not np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(reference.decoder("a").weights, model.decoder("a").weights)]
    assert any(changed)


def test_freeze_batchnorm_reaches_every_encoder_batchnorm():
    model = UniversalSegmenter(DOMAINS, backbone="drn_d_22", width=1 / 32)
    frozen = freeze_batchnorm(model.encoder)
    norms = [w for w in model.encoder.weights if "moving_mean" in w.path]
    assert frozen == len(norms) > 10
    assert not any("gamma" in w.path for w in model.encoder.trainable_weights)
