"""Backbone factory: a name from the config -> a functional encoder at stride 8.

Every encoder maps ImageNet-normalised float RGB [B, H, W, 3] (what
``DomainPreprocessor`` produces) to features at output stride 8.
"""

import pathlib

from usss_tf.config import BACKBONES, TORCH_SUFFIXES
from usss_tf.errors import ConfigError
from usss_tf.model.drn import DRN_D_VARIANTS, build_drn_d
from usss_tf.model.erfnet import build_erfnet

OUTPUT_STRIDE = 8
HUB = "hub"


def build_backbone(name, weights=None, width=1.0, dropout=0.0, sync_batchnorm=False, depth=1.0):
    """Builds the encoder ``name`` and loads ``weights`` from a local path when given.

    ``weights`` is one of (nothing is ever downloaded):

    * an official DRN ImageNet checkpoint (``drn_d_22-4bd2f8ea.pth``, ...) or
      any PyTorch state dict with ``drn.py``'s keys, for the ``drn_d_*``
      backbones (read without PyTorch, ``usss_tf.model.pth``);
    * a ``.weights.h5`` file saved from the same Keras backbone
      (``usss-tf weights convert`` writes one);
    * for ``name="hub"``, a keras-hub preset folder (required: it holds the
      architecture too).
    """
    if name == HUB:
        if depth != 1.0:
            raise ConfigError(f"key 'model.depth': {depth} is not 1.0; a keras-hub preset fixes its depth")
        from usss_tf.model.hub import build_hub_backbone

        return build_hub_backbone(weights, sync_batchnorm=sync_batchnorm)
    if name == "erfnet":
        model = build_erfnet(width=width, depth=depth, dropout=dropout, sync_batchnorm=sync_batchnorm)
    elif name in DRN_D_VARIANTS:
        model = build_drn_d(name, width=width, depth=depth, sync_batchnorm=sync_batchnorm)
    else:
        raise ConfigError(
            f"key 'model.backbone': unknown backbone {name!r}; expected one of: {', '.join(BACKBONES)}"
        )
    if weights:
        load_backbone_weights(model, name, weights)
    return model


def load_backbone_weights(model, name, weights):
    """Loads a ``.pth`` (DRN) or ``.weights.h5`` file into the backbone ``model`` named ``name``."""
    path = pathlib.Path(weights)
    if path.is_dir():
        raise ConfigError(
            f"key 'model.backbone_weights': {path} is a folder; keras-hub presets go with "
            "model.backbone: hub"
        )
    if not path.is_file():
        raise ConfigError(f"key 'model.backbone_weights': file not found: {path}")
    if path.suffix in TORCH_SUFFIXES:
        if name not in DRN_D_VARIANTS:
            raise ConfigError(
                f"key 'model.backbone_weights': {path} is a PyTorch checkpoint; those load into "
                f"the DRN-D backbones ({', '.join(DRN_D_VARIANTS)}), not {name!r}"
            )
        from usss_tf.model.drn_weights import load_drn_checkpoint

        load_drn_checkpoint(model, path, name)
        return
    try:
        model.load_weights(str(path))
    except Exception as error:  # Keras raises several types for a mismatched file.
        raise ConfigError(
            f"key 'model.backbone_weights': {path} does not fit backbone {name!r}: {error}"
        ) from None


def convert_weights(source, name, out, width=1.0):
    """Loads ``source`` (e.g. an official DRN ``.pth``) into backbone ``name``; saves ``out``.

    ``out`` must end in ``.weights.h5`` (Keras' format): the config's
    ``model.backbone_weights`` then loads it without reading the ``.pth``
    again. Returns the number of parameters written.
    """
    out = pathlib.Path(out)
    if not out.name.endswith(".weights.h5"):
        raise ConfigError(f"--out {out}: the file name must end in .weights.h5")
    if name == HUB:
        raise ConfigError("--backbone hub: keras-hub presets load directly; nothing to convert")
    model = build_backbone(name, weights=source, width=width)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(out))
    return model.count_params()
