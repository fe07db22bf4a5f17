"""What an export promises its servers and clients: names, folders, limits, defaults.

``usss_tf.export`` writes to this contract, ``usss_tf.serving`` (the embedded
server and the client) and the CLI read from it; nothing else spells these
names. It follows TF Serving's conventions: integer version folders under a
model base path, the ``serve`` tag, ``serving_default``, and warm-up requests
in ``assets.extra/tf_serving_warmup_requests``.
"""

import pathlib

# -- model base and server defaults ------------------------------------------------------

DEFAULT_MODEL_NAME = "usss"
DEFAULT_MODEL_BASE = f"saved_models/{DEFAULT_MODEL_NAME}"
DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501
SERVING_TAG = "serve"

# -- signatures --------------------------------------------------------------------------

DEFAULT_SIGNATURE = "serving_default"
EMBED_SIGNATURE = "embed"
INPUT_NAME = "images"
SEGMENT_PREFIX = "segment_"
TENSOR_SUFFIX = "_tensor"


def segment_signature(domain_name):
    """Name of the bytes signature of one domain."""
    return f"{SEGMENT_PREFIX}{domain_name}"


def tensor_signature(domain_name):
    """Name of the uint8-tensor signature of one domain."""
    return f"{SEGMENT_PREFIX}{domain_name}{TENSOR_SUFFIX}"


def embed_signature(domain_name):
    """Name of the embedding-branch signature for images of one domain."""
    return f"{EMBED_SIGNATURE}_{domain_name}"


def signature_names(domain_names, with_embedding=True):
    """Every signature an export of these domains holds, in a stable order."""
    names = [DEFAULT_SIGNATURE]
    for name in domain_names:
        names += [segment_signature(name), tensor_signature(name)]
    if with_embedding:
        names += [EMBED_SIGNATURE] + [embed_signature(name) for name in domain_names]
    return names


def served_domains(signature_names_):
    """The domains a set of signature names segments (those with a bytes signature)."""
    return sorted(n[len(SEGMENT_PREFIX):] for n in signature_names_
                  if n.startswith(SEGMENT_PREFIX) and not n.endswith(TENSOR_SUFFIX))


# -- the files of one version ------------------------------------------------------------

EXPORT_FORMAT = 2  # 2: domain scale and pixel limits in the graph (1: neither).
DOMAINS_ASSET = "domains.json"  # under assets/: a SavedModel asset.
EXTRA_DIR = "assets.extra"
DOMAINS_EXTRA = "usss_domains.json"  # the same JSON under assets.extra/.
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = pathlib.Path(EXTRA_DIR) / WARMUP_FILE

# -- request limits ----------------------------------------------------------------------

MAX_IMAGE_PIXELS = 2**23  # 8.4 M: a 2048x2048 image with a 2x margin (4096x2048).
MAX_REQUEST_PIXELS = 2**25  # 33.6 M: e.g. 16 Cityscapes frames (2048x1024) in one request.

# -- version folders ---------------------------------------------------------------------


def version_folders(model_base, complete_only=False):
    """``{version: folder}`` of the integer version folders under ``model_base``.

    TF Serving ignores every other name (an export in progress is written to a
    hidden ``.tmp-*`` sibling). ``complete_only`` keeps folders that hold a
    ``saved_model.pb``.
    """
    base = pathlib.Path(model_base)
    if not base.is_dir():
        return {}
    return {
        int(path.name): path for path in base.iterdir()
        if path.is_dir() and path.name.isdigit()
        and (not complete_only or (path / "saved_model.pb").is_file())
    }
