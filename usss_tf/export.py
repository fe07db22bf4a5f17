"""Export a trained model as a TF Serving SavedModel, one signature per domain.

The layout is TF Serving's: ``<model_base>/<version>/`` holds
``saved_model.pb``, ``variables/``, ``assets/domains.json`` and
``assets.extra/`` (the same JSON as ``usss_domains.json`` and the warm-up
requests TF Serving replays before it marks a version AVAILABLE). A version
is written into a hidden temporary sibling and renamed into place, so a
server watching ``model_base`` never sees half a version.

Signatures (every output is a dict with stable keys):

* ``segment_<domain>``: ``images`` tf.string [B] of PNG/JPEG bytes, all of
  one size -> ``class_ids`` uint8 [B, H, W] and ``probabilities`` float32
  [B, H, W, C_domain] at the input resolution;
* ``segment_<domain>_tensor``: ``images`` uint8 [B, H, W, 3] -> the same;
* ``serving_default``: the first domain's bytes signature;
* ``embed``: ``images`` tf.string [B] -> ``embeddings`` float32 [B, h, w, d]
  (unit-norm pixel embeddings at stride 8) and ``nearest_class_<domain>``
  uint8 [B, H, W] for every domain: the image labelled in every label space.

Signatures are plain ``tf.function``s on a ``tf.Module`` with explicit input
signatures, so the export loads under the TF1 session loader TF Serving uses
as well as under ``tf.saved_model.load``.
"""

import json
import os
import pathlib
import shutil
import tempfile
import uuid
import warnings

import tensorflow as tf

from usss_tf.domains import IGNORE_LABEL
from usss_tf.errors import ExportError

SERVING_TAG = "serve"
DOMAINS_ASSET = "domains.json"
DOMAINS_EXTRA = "usss_domains.json"
WARMUP_FILE = "tf_serving_warmup_requests"
EMBED_SIGNATURE = "embed"

# Leading bytes of the encodings the bytes signatures accept.
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def segment_signature(domain_name):
    """Name of the bytes signature of one domain."""
    return f"segment_{domain_name}"


def tensor_signature(domain_name):
    """Name of the uint8-tensor signature of one domain."""
    return f"segment_{domain_name}_tensor"


def signature_names(domain_names, with_embedding=True):
    """Every signature an export of these domains holds, in a stable order."""
    names = ["serving_default"]
    for name in domain_names:
        names += [segment_signature(name), tensor_signature(name)]
    return names + ([EMBED_SIGNATURE] if with_embedding else [])


def domains_manifest(domains):
    """The JSON-ready list of domains written into the export's assets."""
    return [
        {
            "name": d.name,
            "num_classes": d.num_classes,
            "class_names": list(d.class_names),
            "palette": [list(rgb) for rgb in d.palette],
            "ignore_label": IGNORE_LABEL,
            "description": d.description,
        }
        for d in domains
    ]


# -- graph pieces ------------------------------------------------------------------------


def _check_encodings(images):
    """An assertion that every element of ``images`` starts like a PNG or a JPEG.

    Checked on the magic bytes so the error names the problem (and the
    element) instead of surfacing a decoder message.
    """
    is_png = tf.equal(tf.strings.substr(images, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
    is_jpeg = tf.equal(tf.strings.substr(images, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)
    valid = tf.logical_or(is_png, is_jpeg)
    first_bad = tf.reduce_min(tf.concat([tf.where(~valid)[:, 0], [tf.size(images, tf.int64)]], 0))
    message = tf.strings.format(
        "input 'images': element {} is not a PNG or JPEG image", first_bad
    )
    return tf.debugging.Assert(tf.reduce_all(valid), [message])


def _decode(data):
    return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)


def decode_images(images):
    """tf.string [B] of PNG/JPEG bytes -> uint8 [B, H, W, 3].

    Each image is decoded once. An empty request, bytes that are not a
    PNG/JPEG image and images of different sizes fail with a message saying so.
    """
    count = tf.size(images)
    checks = [
        tf.debugging.Assert(
            count > 0, ["input 'images' holds no images; send at least one"]
        ),
        _check_encodings(images),
    ]
    with tf.control_dependencies(checks):
        first = _decode(images[0])
    size = tf.shape(first)
    decoded = tf.TensorArray(tf.uint8, size=count, element_shape=[None, None, 3])
    decoded = decoded.write(0, first)

    def decode_one(i, decoded):
        image = _decode(images[i])
        same = tf.debugging.Assert(
            tf.reduce_all(tf.equal(tf.shape(image), size)),
            [tf.strings.format(
                "input 'images': all images of one request must have the same size; "
                "image 0 is {}x{}, image {} is {}x{}",
                (size[0], size[1], i, tf.shape(image)[0], tf.shape(image)[1]),
            )],
        )
        with tf.control_dependencies([same]):
            return i + 1, decoded.write(i, image)

    _, decoded = tf.while_loop(lambda i, _: i < count, decode_one, (tf.constant(1), decoded))
    return decoded.stack()


def segment(model, images, domain_name):
    """uint8 [B, H, W, 3] -> one domain's ``class_ids`` and ``probabilities`` at [H, W].

    The same computation as ``model(images)[domain_name]``, for one decoder only.
    """
    features = model.encode(images, training=False)
    logits = model.decode(features, domain_name, tf.shape(images)[1:3])
    return {
        "class_ids": tf.cast(tf.argmax(logits, axis=-1), tf.uint8),
        "probabilities": tf.nn.softmax(logits, axis=-1),
    }


def embed(model, images):
    """uint8 [B, H, W, 3] -> ``embeddings`` at stride 8 and ``nearest_class_<domain>`` at [H, W].

    The nearest class is the argmax of the domain's centroid similarity,
    upsampled bilinearly like the decoders' logits.
    """
    size = tf.shape(images)[1:3]
    embeddings = model.embed(model.encode(images, training=False))
    outputs = {"embeddings": embeddings}
    for name in model.domain_names:
        similarity = tf.image.resize(model.similarity_logits(embeddings, name), size, "bilinear")
        outputs[f"nearest_class_{name}"] = tf.cast(tf.argmax(similarity, axis=-1), tf.uint8)
    return outputs


def _named(function, name):
    function.__name__ = name  # Names the traced functions in the SavedModel.
    return function


def serving_functions(model, with_embedding=True):
    """``{signature name: tf.function}`` with explicit input signatures, for every signature."""
    bytes_spec = tf.TensorSpec([None], tf.string, name="images")
    tensor_spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
    functions = {}
    for name in model.domain_names:
        functions[segment_signature(name)] = tf.function(
            _named(lambda images, d=name: segment(model, decode_images(images), d),
                   segment_signature(name)),
            input_signature=[bytes_spec],
        )
        functions[tensor_signature(name)] = tf.function(
            _named(lambda images, d=name: segment(model, images, d), tensor_signature(name)),
            input_signature=[tensor_spec],
        )
    functions["serving_default"] = functions[segment_signature(model.domain_names[0])]
    if with_embedding:
        functions[EMBED_SIGNATURE] = tf.function(
            _named(lambda images: embed(model, decode_images(images)), EMBED_SIGNATURE),
            input_signature=[bytes_spec],
        )
    return functions


class SegmenterServingModule(tf.Module):
    """The object an export saves: the model's variables, the domains asset, the signatures.

    The model's ``tf.Variable``s are tracked directly rather than the Keras
    model: Keras 3 exports every ``keras.Variable`` as a second copy that the
    SavedModel's restore op fills while the functions read the original, so
    under the TF1 session loader (TF Serving's) every read fails with "Could
    not find variable" (keras-team/keras#20095). ``tf.saved_model.load``
    hides the problem; tracking the underlying variables saves each weight once.
    """

    def __init__(self, model, domains_json_path, with_embedding=True):
        super().__init__(name="usss_serving")
        self.model_variables = [v.value for v in model.weights]
        self.domains_asset = tf.saved_model.Asset(str(domains_json_path))
        self.serving_signatures = {
            name: function.get_concrete_function()
            for name, function in serving_functions(model, with_embedding).items()
        }


# -- warm-up -----------------------------------------------------------------------------


def _warmup_image(image_size):
    """A deterministic uint8 [H, W, 3] gradient image."""
    height, width = image_size
    rows = tf.cast(tf.linspace(0.0, 255.0, height), tf.uint8)
    cols = tf.cast(tf.linspace(0.0, 255.0, width), tf.uint8)
    red = tf.broadcast_to(rows[:, None], (height, width))
    green = tf.broadcast_to(cols[None, :], (height, width))
    blue = tf.fill((height, width), tf.constant(128, tf.uint8))
    return tf.stack([red, green, blue], axis=-1)


def warmup_requests(signatures, image_size, model_name="usss"):
    """One ``PredictionLog`` per signature, each a batch of one synthetic image."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    image = _warmup_image(image_size)
    png = tf.io.encode_png(image).numpy()
    logs = []
    for name, function in signatures.items():
        spec = tf.nest.flatten(function.structured_input_signature)[0]
        if spec.dtype == tf.string:
            tensor = tf.make_tensor_proto([png], dtype=tf.string)
        else:
            tensor = tf.make_tensor_proto(image.numpy()[None], dtype=tf.uint8)
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name)
        )
        request.inputs["images"].CopyFrom(tensor)
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        ))
    return logs


def _write_warmup(path, logs):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


# -- export ------------------------------------------------------------------------------


def _check_domains(model, domains):
    names = [d.name for d in domains]
    if names != list(model.domains):
        raise ExportError(
            f"the model's domains are {list(model.domains)} but the export was given {names}; "
            "pass the domains in the model's order"
        )
    for d in domains:
        if d.num_classes != model.domains[d.name]:
            raise ExportError(
                f"domain {d.name!r} has {d.num_classes} classes but the model's "
                f"decoder has {model.domains[d.name]}"
            )


def export_model(model, domains, export_dir, warmup_image_size=(64, 128), model_name="usss",
                 with_embedding=True):
    """Writes a built ``UniversalSegmenter`` as a SavedModel into ``export_dir``.

    Args:
      model: a built ``UniversalSegmenter``.
      domains: its ``Domain`` objects, in the model's order.
      export_dir: the folder to create; it must not exist.
      warmup_image_size: (H, W) of the synthetic warm-up images.
      model_name: ``model_spec.name`` of the warm-up requests.
      with_embedding: export the ``embed`` signature (only meaningful once the
        label centroids were fitted: ``univ_full`` runs).
    Returns:
      ``export_dir`` as a ``pathlib.Path``.
    """
    export_dir = pathlib.Path(export_dir)
    if export_dir.exists():
        raise ExportError(f"{export_dir} already exists; an export never overwrites a folder")
    _check_domains(model, domains)
    manifest = json.dumps(domains_manifest(domains), indent=2) + "\n"
    try:
        with tempfile.TemporaryDirectory(prefix="usss-export-") as scratch:
            asset = pathlib.Path(scratch) / DOMAINS_ASSET  # Copied into assets/ by the save.
            asset.write_text(manifest)
            module = SegmenterServingModule(model, asset, with_embedding)
            tf.saved_model.save(module, str(export_dir), signatures=module.serving_signatures)
        extra = export_dir / "assets.extra"
        extra.mkdir()
        (extra / DOMAINS_EXTRA).write_text(manifest)
        _write_warmup(
            extra / WARMUP_FILE,
            warmup_requests(module.serving_signatures, warmup_image_size, model_name=model_name),
        )
    except BaseException:
        shutil.rmtree(export_dir, ignore_errors=True)  # Never leave half an export behind.
        raise
    return export_dir


def existing_versions(model_base):
    """The integer version folders under ``model_base``, sorted (TF Serving ignores others)."""
    model_base = pathlib.Path(model_base)
    if not model_base.is_dir():
        return []
    return sorted(int(p.name) for p in model_base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_base):
    """1 + the largest version under ``model_base``; 1 when there is none."""
    versions = existing_versions(model_base)
    return versions[-1] + 1 if versions else 1


def export_run(run_dir, model_base="saved_models/usss", version=None, echo=None):
    """Exports a run directory's final model as ``<model_base>/<version>/``.

    The version is written into a temporary sibling whose name starts with
    ``.`` (TF Serving skips it) and renamed into place once complete. An
    existing version folder is an error, never overwritten. A run that has not
    finished is exported with a warning (through ``echo`` when given).

    Returns:
      The version folder as a ``pathlib.Path``.
    """
    from usss_tf import runs

    model_base = pathlib.Path(model_base)
    if version is None:
        version = next_version(model_base)
    elif int(version) < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    target = model_base / str(int(version))
    if target.exists():
        raise ExportError(f"{target} already exists; pick another --version or leave it out")
    loaded = runs.load_run(run_dir)
    if not loaded.finished:
        message = (
            f"warning: {loaded.run_dir} has not finished; exporting its latest "
            f"checkpoint ({loaded.stage} stage)"
        )
        if echo is None:
            warnings.warn(message, stacklevel=2)
        else:
            echo(message)
    model_base.mkdir(parents=True, exist_ok=True)
    staging = model_base / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        # Only univ_full trains the embedding and fits the centroids: for the
        # other methods an ``embed`` signature would serve random centroids.
        with_embedding = loaded.config.method == "univ_full" and (
            loaded.run_dir / "checkpoints" / "centroids").is_dir()
        if not with_embedding and echo is not None:
            echo(f"note: method {loaded.config.method}: no label centroids, so no 'embed' signature")
        export_model(loaded.model, loaded.domains, staging, model_name=model_base.name,
                     with_embedding=with_embedding)
        if target.exists():  # Another export took this version meanwhile.
            raise ExportError(f"{target} already exists; pick another --version or leave it out")
        os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
