"""Export a trained model as a TF Serving SavedModel, one signature per domain.

The layout is TF Serving's: ``<model_base>/<version>/`` holds
``saved_model.pb``, ``variables/``, ``assets/domains.json`` and
``assets.extra/`` (the same JSON as ``usss_domains.json`` and the warm-up
requests TF Serving replays before it marks a version AVAILABLE). A version
is written into a hidden temporary sibling and renamed into place, so a
server watching ``model_base`` never sees half a version.

Signatures (every output is a dict with stable keys). Each runs the model's
one inference path (``UniversalSegmenter.segment`` / ``nearest_classes``): the
domain's scale, normalisation, encoder, decoder, upsampling to the input
resolution; so a served image gets the class ids ``usss-tf evaluate`` measured.

* ``segment_<domain>``: ``images`` tf.string [B] of PNG/JPEG bytes, all of
  one size -> ``class_ids`` uint8 [B, H, W] and ``probabilities`` float32
  [B, H, W, C_domain] at the input resolution;
* ``segment_<domain>_tensor``: ``images`` uint8 [B, H, W, 3] -> the same;
* ``serving_default``: the first domain's bytes signature;
* ``embed_<domain>``: ``images`` tf.string [B] of that domain ->
  ``embeddings`` float32 [B, h, w, d] (unit-norm pixel embeddings at stride 8)
  and ``nearest_class_<d>`` uint8 [B, H, W] for every domain d: the image
  labelled in every label space; ``embed`` is the first domain's.

Decompression bombs: before decoding, every bytes signature reads each
image's declared size from its PNG (IHDR) or JPEG (SOF) header and refuses an
image above ``max_image_pixels`` or a request above ``max_request_pixels`` in
total; the tensor signatures check their shape against the same limits. The
limits and each domain's scale are recorded in ``assets/domains.json``. The
check is in the graph, so the real ``tensorflow_model_server`` enforces it too.

Signatures are plain ``tf.function``s on a ``tf.Module`` with explicit input
signatures, so the export loads under the TF1 session loader TF Serving uses
as well as under ``tf.saved_model.load``.
"""

import json
import pathlib
import shutil
import tempfile
import warnings

import tensorflow as tf

from usss_tf.domains import IGNORE_LABEL
from usss_tf.errors import ExportError
from usss_tf.run_dir import staged_folder
from usss_tf.serving.contract import (
    DEFAULT_MODEL_BASE,
    DEFAULT_MODEL_NAME,
    DEFAULT_SIGNATURE,
    DOMAINS_ASSET,
    DOMAINS_EXTRA,
    EMBED_SIGNATURE,
    EXPORT_FORMAT,
    EXTRA_DIR,
    INPUT_NAME,
    MAX_IMAGE_PIXELS,
    MAX_REQUEST_PIXELS,
    WARMUP_FILE,
    embed_signature,
    segment_signature,
    tensor_signature,
    version_folders,
)

# Leading bytes of the encodings the bytes signatures accept.
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def export_manifest(domains, scales, max_image_pixels, max_request_pixels):
    """The JSON-ready description written into the export's assets.

    ``scales`` maps domain name -> the scale its signatures resize images by.
    """
    return {
        "format": EXPORT_FORMAT,
        "max_image_pixels": int(max_image_pixels),
        "max_request_pixels": int(max_request_pixels),
        "domains": [
            {
                "name": d.name,
                "num_classes": d.num_classes,
                "class_names": list(d.class_names),
                "palette": [list(rgb) for rgb in d.palette],
                "ignore_label": IGNORE_LABEL,
                "scale": float(scales[d.name]),
                "description": d.description,
            }
            for d in domains
        ],
    }


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


def _png_size(data):
    """(height, width) int64 from a PNG's IHDR chunk, read without decoding."""
    header = tf.cast(tf.io.decode_raw(tf.strings.substr(data, 12, 12), tf.uint8, fixed_length=12),
                     tf.int64)
    valid = tf.logical_and(tf.strings.length(data) >= 24,
                           tf.equal(tf.strings.substr(data, 12, 4), b"IHDR"))
    check = tf.debugging.Assert(valid, ["a PNG image whose header is truncated or has no IHDR chunk"])
    with tf.control_dependencies([check]):
        width = header[4] * 2**24 + header[5] * 2**16 + header[6] * 2**8 + header[7]
        height = header[8] * 2**24 + header[9] * 2**16 + header[10] * 2**8 + header[11]
    return tf.stack([height, width])


def _declared_size(data):
    """(height, width) int64 a PNG or JPEG header declares; nothing is decoded."""
    is_png = tf.equal(tf.strings.substr(data, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
    return tf.cond(
        is_png,
        lambda: _png_size(data),
        lambda: tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64),
    )


def _first_index(condition):
    """Index of the first true element of a bool vector, or its length when none is."""
    return tf.reduce_min(tf.concat(
        [tf.where(condition)[:, 0], [tf.size(condition, out_type=tf.int64)]], 0))


def check_pixel_limits(sizes, max_image_pixels, max_request_pixels):
    """Assertions that no image of ``sizes`` (int64 [B, 2]) and not their sum exceed the limits."""
    pixels = sizes[:, 0] * sizes[:, 1]
    over = pixels > max_image_pixels
    first = _first_index(over)
    shown = tf.minimum(first, tf.maximum(tf.size(pixels, out_type=tf.int64) - 1, 0))
    shown_size = tf.gather(sizes, shown)
    image_check = tf.debugging.Assert(~tf.reduce_any(over), [tf.strings.format(
        "input 'images': image {} is {}x{} (height x width) = {} pixels, above the "
        "limit of {} pixels per image (max_image_pixels) of this export; send a smaller image",
        (first, shown_size[0], shown_size[1], tf.gather(pixels, shown), max_image_pixels),
    )])
    total = tf.reduce_sum(pixels)
    request_check = tf.debugging.Assert(total <= max_request_pixels, [tf.strings.format(
        "input 'images': the request holds {} pixels in {} images, above the limit of {} "
        "pixels per request (max_request_pixels) of this export; send fewer images per request",
        (total, tf.size(pixels), max_request_pixels),
    )])
    return [image_check, request_check]


def decode_images(images, max_image_pixels=MAX_IMAGE_PIXELS, max_request_pixels=MAX_REQUEST_PIXELS):
    """tf.string [B] of PNG/JPEG bytes -> uint8 [B, H, W, 3].

    Before anything is decoded, each image's size is read from its header and
    checked against the pixel limits, so a small file that declares a huge
    image costs its bytes and no more. Each image is then decoded once. An
    empty request, bytes that are not a PNG/JPEG image, a truncated header,
    an image over a limit and images of different sizes fail with a message
    saying so.
    """
    count = tf.size(images)
    checks = [
        tf.debugging.Assert(
            count > 0, ["input 'images' holds no images; send at least one"]
        ),
        _check_encodings(images),
    ]
    with tf.control_dependencies(checks):
        sizes = tf.map_fn(_declared_size, images, fn_output_signature=tf.TensorSpec([2], tf.int64))
    with tf.control_dependencies(check_pixel_limits(sizes, max_image_pixels, max_request_pixels)):
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
    images = decoded.stack()
    # The decoders size their output from the same headers; checked all the same.
    decoded_size = tf.cast(tf.shape(images)[1:3], tf.int64)
    consistent = tf.debugging.Assert(
        tf.reduce_all(tf.equal(decoded_size, sizes[0])),
        [tf.strings.format("input 'images': image 0 decodes to {}x{} but its header declares {}x{}",
                           (decoded_size[0], decoded_size[1], sizes[0][0], sizes[0][1]))],
    )
    with tf.control_dependencies([consistent]):
        return tf.identity(images)


def check_tensor_images(images, max_image_pixels=MAX_IMAGE_PIXELS,
                        max_request_pixels=MAX_REQUEST_PIXELS):
    """uint8 [B, H, W, 3] passed through once their shape is within the pixel limits."""
    shape = tf.shape(images, out_type=tf.int64)
    sizes = tf.tile(shape[None, 1:3], [shape[0], 1])
    with tf.control_dependencies(check_pixel_limits(sizes, max_image_pixels, max_request_pixels)):
        return tf.identity(images)


def _named(function, name):
    function.__name__ = name  # Names the traced functions in the SavedModel.
    return function


def serving_functions(model, with_embedding=True, max_image_pixels=MAX_IMAGE_PIXELS,
                      max_request_pixels=MAX_REQUEST_PIXELS):
    """``{signature name: tf.function}`` with explicit input signatures, for every signature.

    Every function is the model's inference path (``segment`` or
    ``nearest_classes``) behind the input checks; none restates it. Traced
    without autograph: none has Python control flow on tensors.
    """
    bytes_spec = tf.TensorSpec([None], tf.string, name=INPUT_NAME)
    tensor_spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)
    limits = dict(max_image_pixels=max_image_pixels, max_request_pixels=max_request_pixels)
    functions = {}
    for name in model.domain_names:
        functions[segment_signature(name)] = tf.function(
            _named(lambda images, d=name: model.segment(decode_images(images, **limits), d),
                   segment_signature(name)),
            input_signature=[bytes_spec], autograph=False,
        )
        functions[tensor_signature(name)] = tf.function(
            _named(lambda images, d=name: model.segment(check_tensor_images(images, **limits), d),
                   tensor_signature(name)),
            input_signature=[tensor_spec], autograph=False,
        )
    functions[DEFAULT_SIGNATURE] = functions[segment_signature(model.domain_names[0])]
    if with_embedding:
        for name in model.domain_names:
            functions[embed_signature(name)] = tf.function(
                _named(lambda images, d=name: model.nearest_classes(
                    decode_images(images, **limits), d), embed_signature(name)),
                input_signature=[bytes_spec], autograph=False,
            )
        functions[EMBED_SIGNATURE] = functions[embed_signature(model.domain_names[0])]
    return functions


class SegmenterServingModule(tf.Module):
    """The object an export saves: the model's variables, the domains asset, the signatures.

    The model's ``tf.Variable``s are tracked directly rather than the Keras
    model: Keras 3 exports every ``keras.Variable`` as a second copy that the
    SavedModel's restore op fills while the functions read the original, so
    under the TF1 session loader (TF Serving's) every read fails with "Could
    not find variable" (keras-team/keras#20095). ``tf.saved_model.load``
    hides the problem; tracking the underlying variables saves each weight once.
    The reconstruction head of masked image modelling is left out: training
    uses it, no signature does.
    """

    def __init__(self, model, domains_json_path, with_embedding=True, **limits):
        super().__init__(name="usss_serving")
        training_only = {id(v) for v in model.reconstruction_head.weights} if model.reconstruction else set()
        self.model_variables = [v.value for v in model.weights if id(v) not in training_only]
        self.domains_asset = tf.saved_model.Asset(str(domains_json_path))
        self.serving_signatures = {
            name: function.get_concrete_function()
            for name, function in serving_functions(model, with_embedding, **limits).items()
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


def warmup_requests(signatures, image_size, model_name=DEFAULT_MODEL_NAME):
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
        request.inputs[INPUT_NAME].CopyFrom(tensor)
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


def export_model(model, domains, export_dir, warmup_image_size=(64, 128), model_name=DEFAULT_MODEL_NAME,
                 with_embedding=True, max_image_pixels=MAX_IMAGE_PIXELS,
                 max_request_pixels=MAX_REQUEST_PIXELS):
    """Writes a built ``UniversalSegmenter`` as a SavedModel into ``export_dir``.

    Args:
      model: a built ``UniversalSegmenter``.
      domains: its ``Domain`` objects, in the model's order.
      export_dir: the folder to create; it must not exist.
      warmup_image_size: (H, W) of the synthetic warm-up images.
      model_name: ``model_spec.name`` of the warm-up requests.
      with_embedding: export the ``embed`` signatures (only meaningful once the
        label centroids were fitted: ``univ_full`` runs).
      max_image_pixels, max_request_pixels: the largest image (H x W) and
        the most pixels in one request the signatures accept.
    Returns:
      ``export_dir`` as a ``pathlib.Path``.
    """
    export_dir = pathlib.Path(export_dir)
    if export_dir.exists():
        raise ExportError(f"{export_dir} already exists; an export never overwrites a folder")
    _check_domains(model, domains)
    if min(max_image_pixels, max_request_pixels) < 1:
        raise ExportError("max_image_pixels and max_request_pixels must be positive integers")
    limits = dict(max_image_pixels=int(max_image_pixels), max_request_pixels=int(max_request_pixels))
    manifest = json.dumps(export_manifest(domains, model.scales, **limits), indent=2) + "\n"
    try:
        with tempfile.TemporaryDirectory(prefix="usss-export-") as scratch:
            asset = pathlib.Path(scratch) / DOMAINS_ASSET  # Copied into assets/ by the save.
            asset.write_text(manifest)
            module = SegmenterServingModule(model, asset, with_embedding, **limits)
            tf.saved_model.save(module, str(export_dir), signatures=module.serving_signatures)
        extra = export_dir / EXTRA_DIR
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
    return sorted(version_folders(model_base))


def next_version(model_base):
    """1 + the largest version under ``model_base``; 1 when there is none."""
    versions = existing_versions(model_base)
    return versions[-1] + 1 if versions else 1


def export_run(run_dir, model_base=DEFAULT_MODEL_BASE, version=None, echo=None,
               max_image_pixels=MAX_IMAGE_PIXELS, max_request_pixels=MAX_REQUEST_PIXELS):
    """Exports a run directory's final model as ``<model_base>/<version>/``.

    The version is written into a temporary sibling whose name starts with
    ``.`` (TF Serving skips it) and renamed into place once complete
    (``run_dir.staged_folder``). An
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
    # Only univ_full and univ_paper fit label centroids (and train the embedding): for the
    # other methods an ``embed`` signature would serve random centroids.
    with_embedding = loaded.has_label_centroids
    if not with_embedding and echo is not None:
        echo(f"note: method {loaded.config.method}: no label centroids, so no 'embed' signatures")
    try:
        with staged_folder(target) as staging:
            export_model(loaded.model, loaded.domains, staging, model_name=model_base.name,
                         with_embedding=with_embedding, max_image_pixels=max_image_pixels,
                         max_request_pixels=max_request_pixels)
    except FileExistsError:  # Another export took this version meanwhile.
        raise ExportError(f"{target} already exists; pick another --version or leave it out") from None
    return target
