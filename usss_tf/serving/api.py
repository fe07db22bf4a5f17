"""The TF Serving API operations over a ``ModelStore``, request proto in, response proto out.

``ServingApi`` is what both front ends share: the gRPC servicers hand it the
request protos as they arrive; the REST handler builds the same protos for
status and metadata (for predict it resolves the signature through the same
store and runs it on the decoded JSON arrays, keeping them out of
TensorProto). Every failure is a ``RequestError`` with the code TF Serving
gives it:

* unknown model, version or signature: NOT_FOUND;
* missing or extra inputs, wrong dtype or shape, malformed tensors, unknown
  ``output_filter`` names, unsupported metadata fields: INVALID_ARGUMENT;
* errors raised inside the signature keep TensorFlow's code (bytes that are not
  an image, mixed image sizes: INVALID_ARGUMENT).
"""

import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from usss_tf.serving.admission import Admission
from usss_tf.serving.drain import Drain
from usss_tf.serving.metrics import ServingMetrics
from usss_tf.serving.status import RequestError, invalid_argument, not_found

SIGNATURE_DEF_FIELD = "signature_def"
_UNKNOWN_ERROR = 2  # tensorflow.error.Code.UNKNOWN


def requested_version(model_spec):
    """``(version, label)`` a ``ModelSpec`` asks for; both None for the newest."""
    if model_spec.HasField("version"):
        return int(model_spec.version.value), None
    return None, model_spec.version_label or None


def _input_spec(name, proto):
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        raise invalid_argument(f"input '{name}': TensorProto has no valid dtype ({proto.dtype})") from None
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"input '{name}': TensorProto must have a known shape")
    return dtype, tuple(dim.size for dim in proto.tensor_shape.dim)


def _to_array(name, proto):
    try:
        return tf.make_ndarray(proto)
    except Exception as error:  # noqa: BLE001 - any malformed proto is the client's mistake
        raise invalid_argument(
            f"input '{name}': malformed TensorProto (values do not match its shape or dtype): {error}"
        ) from None


class ServingApi:
    """Predict, GetModelMetadata and GetModelStatus on one ``ModelStore``.

    ``models`` is the ``ModelRegistry`` of served models. Predict requests of
    both front ends share one ``Admission`` (the bound on requests in flight)
    and one ``Drain`` (the open calls a shutdown waits for); every Predict is
    counted and timed in ``metrics``.
    """

    def __init__(self, models, admission=None, metrics=None):
        self.models = models
        self.admission = admission or Admission()
        self.drain = Drain()
        self.metrics = metrics or ServingMetrics(
            loaded_versions=models.loaded_counts, admission=self.admission, serves=models.serves)

    def open_call(self, model_name):
        """Opens one Predict call in ``drain``; a refusal (shutting down) is counted and raised."""
        try:
            self.drain.started()
        except RequestError as refusal:
            self.metrics.count(model_name, refusal.code.name)
            raise

    def resolve(self, model_spec):
        """The ``LoadedVersion`` a ``ModelSpec`` names (version, label or the newest)."""
        return self.models.get(model_spec.name, *requested_version(model_spec))

    def predict(self, request, deadline=None, entrypoint="GRPC"):
        """Answers a ``PredictRequest``; ``deadline`` (a ``time.monotonic()`` instant) bounds its wait."""
        spec = request.model_spec
        with self.metrics.request(spec.name, "predict", entrypoint):
            return self._predict(request, deadline)

    def _predict(self, request, deadline):
        spec = request.model_spec
        loaded = self.resolve(spec)
        runner = loaded.runner(spec.signature_name, spec.name)
        # Check names, dtypes and shapes on the protos before decoding any values.
        runner.check_inputs({name: _input_spec(name, proto) for name, proto in request.inputs.items()})
        runner.check_output_filter(request.output_filter)
        with self.admission.slot(deadline):
            arrays = {name: _to_array(name, proto) for name, proto in request.inputs.items()}
            outputs = runner.run(arrays, request.output_filter)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = loaded.version
        response.model_spec.signature_name = runner.name
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(array))
        return response

    def get_model_metadata(self, request):
        fields = list(request.metadata_field)
        if not fields:
            raise invalid_argument(
                f"GetModelMetadataRequest must name at least one metadata_field; supported: {SIGNATURE_DEF_FIELD}"
            )
        unsupported = sorted(set(fields) - {SIGNATURE_DEF_FIELD})
        if unsupported:
            raise invalid_argument(
                f"metadata field(s) {', '.join(map(repr, unsupported))} not supported; "
                f"supported: {SIGNATURE_DEF_FIELD}"
            )
        spec = request.model_spec
        loaded = self.resolve(spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in loaded.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = loaded.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    def get_model_status(self, request):
        spec = request.model_spec
        version, label = requested_version(spec)
        store = self.models.store(spec.name)
        if version is not None or label is not None:
            entries = [(self.resolve(spec).version, None)]
        else:
            entries = store.statuses()
            if not entries:
                raise not_found(f"model '{spec.name}' has no versions yet under {store.model_base}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, error in entries:
            status = response.model_version_status.add()
            status.version = number
            status.status.SetInParent()  # error_code OK, printed as such in JSON
            if error is None:
                # Draining for a shutdown: TF Serving's state for a version on its way out,
                # so a health check on model status takes the replica out of rotation.
                status.state = (get_model_status_pb2.ModelVersionStatus.UNLOADING if self.drain.closed_reason
                                else get_model_status_pb2.ModelVersionStatus.AVAILABLE)
            else:
                status.state = get_model_status_pb2.ModelVersionStatus.END
                status.status.error_code = _UNKNOWN_ERROR
                status.status.error_message = error
        return response
