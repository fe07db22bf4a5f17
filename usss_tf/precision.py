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

``auto`` picks by hardware (``resolve``): ``mixed_float16`` on GPUs with
tensor cores (compute capability 7.0 or newer), ``mixed_bfloat16`` on CPUs
with native bf16 matrix instructions (AMX or AVX512-BF16, where oneDNN runs
bf16 convolutions about twice as fast as float32), float32 otherwise (on
CPUs without them bf16 is emulated and several times slower).
"""

import contextlib
import functools
import pathlib

import keras

from usss_tf.config import PRECISIONS as POLICIES
from usss_tf.errors import ConfigError


def check_policy(name, key="train.precision"):
    """Returns ``name`` if it is one of ``POLICIES``; otherwise a ``ConfigError`` naming ``key``."""
    if name not in POLICIES:
        raise ConfigError(f"key '{key}': unknown precision {name!r}; expected one of: {', '.join(POLICIES)}")
    return name


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where that file does not exist."""
    path = pathlib.Path(cpuinfo)
    if not path.is_file():
        return frozenset()
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _gpu_compute_capabilities():
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities


@functools.lru_cache(maxsize=None)
def auto_policy():
    """The policy ``auto`` stands for on this machine (see the module docstring)."""
    gpus = _gpu_compute_capabilities()
    if gpus:
        return "mixed_float16" if all(c >= (7, 0) for c in gpus) else "float32"
    if set(BF16_CPU_FLAGS) & cpu_flags():
        return "mixed_bfloat16"
    return "float32"


def resolve(name):
    """``name``, with ``auto`` replaced by this machine's choice."""
    check_policy(name)
    return auto_policy() if name == "auto" else name


@contextlib.contextmanager
def dtype_policy(name):
    """Sets Keras's global dtype policy to ``name`` inside the block, then restores the previous one.

    Layers constructed inside the block keep the policy for their whole life.
    ``auto`` is resolved for this machine.
    """
    name = resolve(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
