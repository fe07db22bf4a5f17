"""Mixed precision: which Keras dtype policy a run's layers are built with.

``train.precision`` selects one of ``POLICIES``. Under a ``mixed_*`` policy
the encoder and the 1x1 heads compute in float16 / bfloat16 while every
variable stays float32; what is numerically delicate is computed in float32
whatever the policy: the decoders' logits and the pixel embeddings are cast
to float32 as they leave their layer, the centroid similarity layer runs in
float32, and the losses (cross-entropy, entropy) cast their inputs to float32
(see ``usss_tf.model.heads`` and ``usss_tf.losses``).

Keras layers take the *global* policy when they are constructed, so the
policy is set only around model construction (``dtype_policy``) and restored
afterwards: nothing else in the process (another model, a test) inherits it.
Under ``mixed_float16`` ``Model.compile`` wraps the optimizer in a
``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling), and the
model's ``train_step`` scales its loss with ``optimizer.scale_loss``;
bfloat16 has float32's exponent range and needs no loss scaling.
"""

import contextlib

import keras

from usss_tf.config import PRECISIONS as POLICIES
from usss_tf.errors import ConfigError


def check_policy(name, key="train.precision"):
    """Returns ``name`` if it is one of ``POLICIES``; otherwise a ``ConfigError`` naming ``key``."""
    if name not in POLICIES:
        raise ConfigError(f"key '{key}': unknown precision {name!r}; expected one of: {', '.join(POLICIES)}")
    return name


@contextlib.contextmanager
def dtype_policy(name):
    """Sets Keras's global dtype policy to ``name`` inside the block, then restores the previous one.

    Layers constructed inside the block keep the policy for their whole life.
    """
    check_policy(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
