"""TF Serving's gRPC services on the official generated stubs, over a ``ServingApi``.

``PredictionService`` answers Predict and GetModelMetadata, ``ModelService``
answers GetModelStatus. Every other RPC of those services (Classify, Regress,
MultiInference, HandleReloadConfigRequest) is UNIMPLEMENTED: the generated base
classes would say so too, but only after logging a traceback for each call, so
they are overridden with a plain abort.

Each call is answered on its own: a ``RequestError`` becomes its status code
and message, anything else INTERNAL (logged), and the server carries on.
``context.abort`` raises, so it is called outside the ``try``.
"""

import logging
import time

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from usss_tf.serving.status import RequestError

log = logging.getLogger(__name__)


def _deadline(context):
    """The call's deadline as a ``time.monotonic()`` instant, or None when the client set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _answer(context, operation, request, **kwargs):
    try:
        return operation(request, **kwargs)
    except RequestError as error:
        code, message = error.code, error.message
    except Exception as error:  # noqa: BLE001 - one bad request must not take the server down
        log.exception("request failed")
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"
    context.abort(code, message)


def _unimplemented(service, method):
    def handler(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{service}.{method} is not implemented by usss-tf serve")

    handler.__name__ = method
    handler.__doc__ = f"{method}: UNIMPLEMENTED."
    return handler


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata."""

    def __init__(self, api):
        self.api = api

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        return _answer(context, self._predict, request, call=context)

    def _predict(self, request, call):
        # Open until the reply is sent (the termination callback) and the handler returned.
        self.api.open_call(request.model_spec.name)
        part_done = self.api.drain.closer(parts=2)
        if not call.add_callback(part_done):  # the call already ended
            part_done()
        try:
            return self.api.predict(request, deadline=_deadline(call))
        finally:
            part_done()

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _answer(context, self.api.get_model_metadata, request)

    Classify = _unimplemented("PredictionService", "Classify")
    Regress = _unimplemented("PredictionService", "Regress")
    MultiInference = _unimplemented("PredictionService", "MultiInference")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus."""

    def __init__(self, api):
        self.api = api

    def GetModelStatus(self, request, context):  # noqa: N802
        return _answer(context, self.api.get_model_status, request)

    HandleReloadConfigRequest = _unimplemented("ModelService", "HandleReloadConfigRequest")


def add_services(server, api):
    """Registers both services of ``api`` on the ``grpc.Server``."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(api), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(api), server)
