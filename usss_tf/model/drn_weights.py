"""Loads the official DRN ImageNet checkpoints (PyTorch ``.pth``) into the Keras DRN-D.

Keys follow the published ``drn.py`` (``layer0.0.weight``,
``layer0.1.running_mean``, ``layer3.0.conv1.weight``,
``layer3.0.downsample.0.weight``, ...). The ImageNet classifier (``fc.*``) and
BatchNorm's ``num_batches_tracked`` counters are ignored; every other key
must be used, and every weight of the backbone must be set.
"""

import keras
import numpy as np

from usss_tf.errors import ConfigError
from usss_tf.model import pth

IGNORED_PREFIXES = ("fc.",)
IGNORED_SUFFIXES = (".num_batches_tracked",)

# torch parameter name -> Keras attribute, per layer type.
_BATCH_NORM = (
    ("weight", "gamma"), ("bias", "beta"),
    ("running_mean", "moving_mean"), ("running_var", "moving_variance"),
)


def torch_prefix(layer_name):
    """``layer3_0_downsample_0`` -> ``layer3.0.downsample.0`` (the DRN naming rule)."""
    return layer_name.replace("_", ".")


def expected_keys(backbone):
    """``{torch key: (variable, transform)}`` for every weight of a DRN-D backbone."""
    expected = {}
    for layer in backbone.layers:
        prefix = torch_prefix(layer.name)
        if isinstance(layer, keras.layers.Conv2D):
            # torch [out, in, kh, kw] -> Keras [kh, kw, in, out].
            expected[f"{prefix}.weight"] = (layer.kernel, lambda a: a.transpose(2, 3, 1, 0))
            if layer.use_bias:
                expected[f"{prefix}.bias"] = (layer.bias, None)
        elif isinstance(layer, keras.layers.BatchNormalization):
            for torch_name, attribute in _BATCH_NORM:
                expected[f"{prefix}.{torch_name}"] = (getattr(layer, attribute), None)
        elif layer.weights:
            raise TypeError(f"DRN layer {layer.name} has weights of an unmapped type")
    return expected


def _ignored(key):
    return key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES)


def _listing(keys, limit=5):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def load_drn_checkpoint(backbone, path, variant):
    """Sets every weight of the Keras DRN ``backbone`` from the PyTorch checkpoint ``path``.

    Raises ``ConfigError`` naming the file and the missing / unexpected keys,
    or the first key whose shape differs, before changing any weight.
    """
    state = pth.load_state_dict(path)
    expected = expected_keys(backbone)
    used = {k for k in state if not _ignored(k)}
    missing, unexpected = set(expected) - used, used - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        raise ConfigError(
            f"{path}: not a checkpoint of {variant} ({backbone.count_params():,} parameters): "
            + "; ".join(parts)
        )
    values = []
    for key, (variable, transform) in expected.items():
        array = state[key]
        array = transform(array) if transform else array
        if tuple(array.shape) != tuple(variable.shape):
            raise ConfigError(
                f"{path}: key '{key}' has shape {tuple(state[key].shape)}, {variant} expects "
                f"{_torch_shape(variable.shape, transform)} (a different depth or width?)"
            )
        values.append((variable, array.astype(np.float32)))
    for variable, array in values:
        variable.assign(array)


def _torch_shape(shape, transform):
    if transform is None:
        return tuple(shape)
    kh, kw, cin, cout = shape
    return (cout, cin, kh, kw)
