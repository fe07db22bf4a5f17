"""Backbone factory: a name from the config -> a functional encoder at stride 8."""

import pathlib

from usss_tf.config import BACKBONES
from usss_tf.errors import ConfigError
from usss_tf.model.drn import DRN_D_LAYERS, build_drn_d
from usss_tf.model.erfnet import build_erfnet

OUTPUT_STRIDE = 8


def build_backbone(name, width=1.0, dropout=0.0, sync_batchnorm=False, weights=None):
    """Builds the encoder ``name``; loads ``weights`` from a local file when given.

    Nothing is downloaded: pretrained weights (e.g. ImageNet) must be a local
    ``.weights.h5`` file saved from a backbone of the same architecture.
    """
    if name == "erfnet":
        model = build_erfnet(width=width, dropout=dropout, sync_batchnorm=sync_batchnorm)
    elif name in DRN_D_LAYERS:
        model = build_drn_d(name, width=width, sync_batchnorm=sync_batchnorm)
    else:
        raise ConfigError(
            f"key 'model.backbone': unknown backbone {name!r}; expected one of: {', '.join(BACKBONES)}"
        )
    if weights:
        path = pathlib.Path(weights)
        if not path.is_file():
            raise ConfigError(f"key 'model.backbone_weights': file not found: {path}")
        try:
            model.load_weights(str(path))
        except Exception as error:  # Keras raises several types for a mismatched file.
            raise ConfigError(
                f"key 'model.backbone_weights': {path} does not fit backbone {name!r}: {error}"
            ) from None
    return model
