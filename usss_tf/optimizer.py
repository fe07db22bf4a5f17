"""The training optimizer: AdamW or SGD with polynomial decay, and an encoder learning-rate multiplier.

A pretrained encoder may be trained slower than the decoders and heads that
start from scratch (``train.encoder_lr_multiplier``; default 1.0, one rate for
all, as the paper's code does: on the synthetic proxy,
``benchmarks/pretrained_encoder.py``, 1.0 beat 0.1 in 5 of 6 seed-paired
comparisons). Keras optimizers have one learning rate; ``LayerwiseLearningRate`` multiplies
it for a chosen set of variables inside ``update_step``, like PyTorch
parameter groups: the gradient step and the decoupled weight decay
(``lr * weight_decay * w``) both use the multiplied rate. This is exact for
SGD and Adam alike (scaling gradients instead would cancel out in Adam).

Both compute the step's learning rate (and Adam its bias correction) once
per step, where Keras recomputes them inside every variable's update: the
same values bit for bit, a step graph a third smaller, traced faster.
"""

import keras
import tensorflow as tf

class LayerwiseLearningRate:
    """Mixin for a Keras optimizer: ``multiplier`` x the learning rate for ``variables``."""

    def set_multiplier(self, variables, multiplier):
        self._multiplied_keys = {self._var_key(v) for v in variables}
        self._multiplier = float(multiplier)

    def _multiplied(self, variable):
        return getattr(self, "_multiplier", 1.0) != 1.0 and self._var_key(variable) in self._multiplied_keys

    def update_step(self, gradient, variable, learning_rate):
        if self._multiplied(variable):
            learning_rate = learning_rate * self._multiplier
        return super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        """Keras' TensorFlow weight decay, with the rate evaluated once per step.

        Keras evaluates the learning-rate schedule again for every variable
        (about 15 ops each, a few thousand per step graph, traced and run on
        every step); the value is the same, so it is computed once here, and
        multiplied for the chosen variables.
        """
        if self.weight_decay is None:
            return
        rate = self.learning_rate

        def decay(variable, rate):
            if self._use_weight_decay(variable):
                rate = tf.cast(rate, variable.dtype)
                if self._multiplied(variable):
                    rate = rate * self._multiplier
                variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype) * rate)

        def apply(distribution, variables, rate):
            for variable in variables:
                if isinstance(variable, keras.Variable):
                    variable = variable.value
                distribution.extended.update(variable, decay, args=(rate,), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            apply, self._distribution_strategy, variables, rate)


class SGD(LayerwiseLearningRate, keras.optimizers.SGD):
    """SGD with momentum and a per-variable-set learning-rate multiplier."""


class AdamW(LayerwiseLearningRate, keras.optimizers.AdamW):
    """AdamW with a per-variable-set learning-rate multiplier.

    Keras' Adam recomputes the step's bias correction (two powers, a square
    root, a division: about 15 ops) inside the update of every variable. The
    same expressions are computed here once per step, so the update is the
    same bit for bit with a much smaller step graph (faster to trace and
    optimise, fewer ops to run per step).
    """

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        super()._backend_update_step(grads, trainable_variables, self._step_factors(learning_rate))

    def _step_factors(self, learning_rate):
        """The learning rate and Adam's bias-corrected step size, plain and multiplied."""
        lr = tf.cast(learning_rate, tf.float32)
        local_step = tf.cast(self.iterations + 1, tf.float32)
        beta_1_power = tf.pow(tf.cast(self.beta_1, tf.float32), local_step)
        beta_2_power = tf.pow(tf.cast(self.beta_2, tf.float32), local_step)
        correction = tf.sqrt(1 - beta_2_power)

        def alpha(rate):
            return rate * correction / (1 - beta_1_power)

        factors = {"learning_rate": lr, "alpha": alpha(lr)}
        if getattr(self, "_multiplier", 1.0) != 1.0:
            factors["alpha_multiplied"] = alpha(lr * self._multiplier)
        return factors

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(learning_rate, dict):
            return super().update_step(gradient, variable, learning_rate)
        if variable.dtype != tf.float32 or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate["learning_rate"])
        alpha = learning_rate["alpha_multiplied" if self._multiplied(variable) else "alpha"]
        gradient = tf.cast(gradient, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (tf.square(gradient) - v) * (1 - self.beta_2))
        self.assign_sub(variable, (m * alpha) / (tf.sqrt(v) + self.epsilon))


def make_optimizer(train_config, steps, encoder_variables=(), encoder_multiplier=1.0):
    """The stage's optimizer: AdamW or SGD (momentum) with polynomial decay over ``steps``.

    ``encoder_variables`` learn at ``encoder_multiplier`` x the rate.
    """
    schedule = keras.optimizers.schedules.PolynomialDecay(
        train_config.learning_rate, decay_steps=max(steps, 1),
        end_learning_rate=train_config.learning_rate * 1e-2, power=train_config.poly_power,
    )
    if train_config.optimizer == "sgd":
        optimizer = SGD(
            schedule, momentum=train_config.momentum, weight_decay=train_config.weight_decay or None
        )
    else:
        optimizer = AdamW(schedule, weight_decay=train_config.weight_decay)
    optimizer.set_multiplier(encoder_variables, encoder_multiplier)
    return optimizer
