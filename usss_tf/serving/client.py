"""The prediction client behind ``usss-tf predict``: image files in, class-id PNGs and overlays out.

It speaks only the official ``tensorflow-serving-api`` gRPC stubs, so it works
unchanged against ``usss-tf serve`` and against the real
``tensorflow_model_server``. One GetModelMetadata call checks that the model
has the domain's ``segment_<domain>`` signature (and how many classes it
predicts); then the images' encoded bytes go to that signature with
``output_filter: ["class_ids"]``, so the large probability tensor never
crosses the wire. Images of one size share a request (up to ``batch`` of
them); images of different sizes go in separate requests, as the signature
requires.

Colours come from the domain registry (``usss_tf.domains``). A domain the
registry does not know, or whose class count differs from the served model's,
gets a generated palette, so the client still works for models trained
elsewhere.
"""

import dataclasses
import io
import pathlib

import grpc
import numpy as np
from PIL import Image, UnidentifiedImageError

from usss_tf import domains as domain_registry
from usss_tf.errors import ServingError, UnknownDomainError
from usss_tf.serving import contract

DEFAULT_TIMEOUT = 60.0
DEFAULT_BATCH = 8
OVERLAY_ALPHA = 0.5
# Formats the export's bytes signatures decode; others are re-encoded as PNG.
_SENT_AS_IS = {"PNG", "JPEG"}


def generated_palette(num_classes):
    """Distinct colours for ``num_classes`` classes (the PASCAL VOC bit-interleaving scheme)."""
    palette = []
    for index in range(num_classes):
        rgb, value = [0, 0, 0], index + 1
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        palette.append(tuple(rgb))
    return palette


def domain_palette(domain, num_classes=None):
    """The registry's palette of ``domain``; a generated one when it is unknown or has another class count."""
    try:
        palette = list(domain_registry.get_domain(domain).palette)
    except UnknownDomainError:
        palette = None
    if palette is None or (num_classes is not None and len(palette) != num_classes):
        palette = generated_palette(num_classes or 256)
    return np.asarray(palette, dtype=np.uint8)


@dataclasses.dataclass
class ImageFile:
    """One input image: its path, the bytes to send, and its pixels for the overlay."""

    path: pathlib.Path
    data: bytes
    rgb: np.ndarray

    @property
    def size(self):
        return self.rgb.shape[:2]

    @classmethod
    def read(cls, path):
        path = pathlib.Path(path)
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                image_format = image.format
                rgb = np.asarray(image.convert("RGB"))
        except FileNotFoundError:
            raise ServingError(f"{path}: no such file") from None
        except UnidentifiedImageError:
            raise ServingError(f"{path}: not an image (PNG, JPEG or any format Pillow reads)") from None
        except OSError as error:
            raise ServingError(f"{path}: cannot read the image: {error.strerror or error}") from None
        if image_format not in _SENT_AS_IS:
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, format="PNG")
            data = buffer.getvalue()
        return cls(path=path, data=data, rgb=rgb)


class SegmentationClient:
    """Calls one model server's ``segment_<domain>`` signatures over gRPC.

    Args:
      server: ``HOST:PORT`` of the gRPC API.
      model: the model name (``--model_name`` of TF Serving).
      version: a version number, or ``None`` for the newest.
      timeout: seconds per call.
      max_message_mb: the largest answer accepted (gRPC's default is 4 MB).
    """

    def __init__(self, server, model=contract.DEFAULT_MODEL_NAME, version=None, timeout=DEFAULT_TIMEOUT, max_message_mb=64):
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.server = server
        self.model = model
        self.version = version
        self.timeout = timeout
        limit = int(max_message_mb * 1024 * 1024)
        self._channel = grpc.insecure_channel(
            server, options=[("grpc.max_receive_message_length", limit),
                             ("grpc.max_send_message_length", limit)],
        )
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _model_spec(self, spec, signature_name=""):
        spec.name = self.model
        if self.version is not None:
            spec.version.value = int(self.version)
        spec.signature_name = signature_name

    def _where(self):
        version = "" if self.version is None else f" version {self.version}"
        return f"server {self.server}, model '{self.model}'{version}"

    def _call(self, method, request, what):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ServingError(f"cannot reach server {self.server}: {details}") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingError(f"{self._where()}: {what}: no answer within {self.timeout:g} s") from None
            raise ServingError(f"{self._where()}: {what}: {code.name}: {details}") from None

    def signature_defs(self):
        """{name: SignatureDef} the server reports for the model (GetModelMetadata)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._model_spec(request.model_spec)
        response = self._call(self._predictions.GetModelMetadata, request, "GetModelMetadata")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return dict(signature_map.signature_def)

    def model_status(self):
        """[(version, state name)] from GetModelStatus."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec)
        response = self._call(self._models.GetModelStatus, request, "GetModelStatus")
        return [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state))
                for s in response.model_version_status]

    def num_classes(self, domain):
        """Classes the served model predicts for ``domain``; a clear error if it has no such domain."""
        signature_defs = self.signature_defs()
        name = contract.segment_signature(domain)
        if name not in signature_defs:
            served = contract.served_domains(signature_defs)
            raise ServingError(f"{self._where()}: no domain '{domain}' (no signature '{name}'); "
                               f"it serves: {', '.join(served) or 'no segment_<domain> signatures'}")
        dims = signature_defs[name].outputs["probabilities"].tensor_shape.dim
        size = dims[-1].size if dims else -1
        return size if size > 0 else None

    def segment(self, domain, encoded_images):
        """Class ids (uint8 [B, H, W]) of ``encoded_images`` (PNG/JPEG bytes, all one size)."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec, contract.segment_signature(domain))
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(list(encoded_images), dtype=tf.string))
        request.output_filter.append("class_ids")
        response = self._call(self._predictions.Predict, request, f"Predict {contract.segment_signature(domain)}")
        return tf.make_ndarray(response.outputs["class_ids"])


def _batches(images, batch):
    """Groups of at most ``batch`` images of one size, in input order within a size."""
    by_size = {}
    for image in images:
        by_size.setdefault(image.size, []).append(image)
    for group in by_size.values():
        for start in range(0, len(group), batch):
            yield group[start:start + batch]


def _check_unique_stems(paths):
    seen = {}
    for path in paths:
        if path.stem in seen:
            raise ServingError(f"{seen[path.stem]} and {path} would both write {path.stem}_ids.png; "
                               "rename one or predict them into different --out folders")
        seen[path.stem] = path


def write_prediction(image, class_ids, palette, out_dir):
    """Writes ``<stem>_ids.png`` (class ids, mode L) and ``<stem>_overlay.png``; returns both paths."""
    out_dir = pathlib.Path(out_dir)
    ids_path = out_dir / f"{image.path.stem}_ids.png"
    overlay_path = out_dir / f"{image.path.stem}_overlay.png"
    Image.fromarray(class_ids.astype(np.uint8)).save(ids_path)  # 2-D uint8: mode L
    known = class_ids < len(palette)
    colours = palette[np.where(known, class_ids, 0)]
    colours[~known] = 0
    Image.blend(Image.fromarray(image.rgb), Image.fromarray(colours), OVERLAY_ALPHA).save(overlay_path)
    return ids_path, overlay_path


def predict_files(server, domain, image_paths, out_dir, model=contract.DEFAULT_MODEL_NAME, version=None,
                  timeout=DEFAULT_TIMEOUT, batch=DEFAULT_BATCH, echo=None):
    """Segments image files on a model server and writes their PNGs into ``out_dir``.

    Returns:
      [(image path, ids PNG, overlay PNG)] in input order.
    """
    paths = [pathlib.Path(p) for p in image_paths]
    if not paths:
        raise ServingError("no images given")
    _check_unique_stems(paths)
    images = [ImageFile.read(path) for path in paths]
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    with SegmentationClient(server, model=model, version=version, timeout=timeout) as client:
        palette = domain_palette(domain, client.num_classes(domain))
        for group in _batches(images, max(1, int(batch))):
            try:
                class_ids = client.segment(domain, [image.data for image in group])
            except ServingError as error:
                names = ", ".join(str(image.path) for image in group)
                raise ServingError(f"{error} (images: {names})") from None
            for image, ids in zip(group, class_ids):
                written[image.path] = write_prediction(image, ids, palette, out_dir)
                if echo is not None:
                    echo(f"{image.path} -> {written[image.path][0]}, {written[image.path][1]}")
    return [(path, *written[path]) for path in paths]
