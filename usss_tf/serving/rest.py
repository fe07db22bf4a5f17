"""TF Serving's REST API on the standard library's ``ThreadingHTTPServer``.

Routes (as TF Serving's HTTP server has them):

    GET  /v1/models/<name>[/versions/<v>]             model status
    GET  /v1/models/<name>[/versions/<v>]/metadata    signature defs
    POST /v1/models/<name>[/versions/<v>]:predict     {"signature_name", "instances" | "inputs"}
    GET  /monitoring/prometheus/metrics               Prometheus metrics (with --monitoring)

Answers are JSON; failures are ``{"error": "..."}`` with the HTTP status of
their code (400 bad request, 404 not found, 413 body over the size limit, 429
server busy, 501 classify/regress, 503 shutting down). Status and metadata are
the gRPC response protos printed as JSON, so both APIs report the same thing.
"""

import http.server
import json
import logging
import re
import socket
import time

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
)

from usss_tf.serving import json_tensors, metrics
from usss_tf.serving.api import SIGNATURE_DEF_FIELD
from usss_tf.serving import contract
from usss_tf.serving.status import RequestError, invalid_argument, not_found

log = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>/metadata|:predict|:classify|:regress)?$"
)


def _proto_json(message):
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _model_spec(route):
    spec = model_pb2.ModelSpec(name=route["name"])
    if route["version"] is not None:
        spec.version.value = int(route["version"])
    if route["label"] is not None:
        spec.version_label = route["label"]
    return spec


class RestHandler(http.server.BaseHTTPRequestHandler):
    """One HTTP request against ``server.api`` (a ``ServingApi``)."""

    protocol_version = "HTTP/1.1"
    server_version = "usss-tf-serve"
    timeout = 60  # seconds a connection may sit idle or stall mid-body before it is closed

    # -- plumbing ----------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)

    def _send_json(self, status, payload):
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:  # a refusal that ends the connection says so (HTTP/1.1)
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _discard_body(self, length, cap):
        """Reads and drops a refused request's body, then marks the connection to close.

        A client still sending when the server closes would see a reset
        instead of the refusal. A body of at most ``cap`` bytes is read in
        64 KiB chunks (no buffer is kept; a stalled client is cut off by
        ``timeout``); a larger one is not read at all. A client that gives up
        meanwhile only ends its own connection.
        """
        self.close_connection = True
        if length > cap:
            return
        remaining = length
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass  # the client gave up; its connection is closed after the refusal

    def _route(self):
        match = _ROUTE.match(self.path.split("?", 1)[0])
        if match is None:
            raise not_found(f"malformed request: {self.command} {self.path}; "
                            "expected /v1/models/<name>[/versions/<v>][/metadata|:predict]")
        return match.groupdict()

    def _model_name(self):
        """The model the path names, for counting a refusal; "" when the path is malformed."""
        try:
            return self._route()["name"]
        except RequestError:
            return ""

    def _handle(self, answer):
        try:
            status, payload = 200, answer(self._route())
        except RequestError as error:
            status, payload = error.http_status, {"error": error.message}
        except Exception as error:  # noqa: BLE001 - one bad request must not take the server down
            log.exception("REST request failed: %s %s", self.command, self.path)
            status, payload = 500, {"error": f"internal error: {type(error).__name__}: {error}"}
        self._send_json(status, payload)

    # -- methods -----------------------------------------------------------

    def do_GET(self):  # noqa: N802 - the stdlib's name
        if self.path.split("?", 1)[0] == metrics.METRICS_PATH and self.server.monitoring:
            body = self.server.api.metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", metrics.CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._handle(self._get)

    def do_POST(self):  # noqa: N802
        # Read (or refuse) the body first, so the connection stays in step.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send_json(400, {"error": "POST needs a valid Content-Length header"})
            return
        limit = self.server.max_body_bytes
        if self.server.api.admission.full():
            # Refused without keeping its body: a burst of connections costs no buffers.
            self.server.api.metrics.count(self._model_name(), "RESOURCE_EXHAUSTED")
            self._discard_body(length, cap=limit)  # while saturated: at most one request's worth
            self._send_json(429, {"error": "server busy: every request slot is taken; retry later"})
            return
        if length > limit:
            self._discard_body(length, cap=4 * limit)
            self._send_json(413, {"error": f"request body of {length} bytes is over the limit of "
                                           f"{limit} bytes (usss-tf serve --max-message-mb)"})
            return
        self._body = self.rfile.read(length)
        api = self.server.api
        try:
            api.open_call(self._model_name())  # from here: a slow upload does not hold a shutdown
        except RequestError as refusal:  # shutting down
            self.close_connection = True
            self._send_json(refusal.http_status, {"error": refusal.message})
            return
        try:
            self._handle(self._post)
        finally:
            api.drain.finished()

    def _get(self, route):
        api = self.server.api
        if route["action"] == "/metadata":
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=_model_spec(route), metadata_field=[SIGNATURE_DEF_FIELD]
            )
            response = api.get_model_metadata(request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
            return {
                "model_spec": _proto_json(response.model_spec),
                "metadata": {SIGNATURE_DEF_FIELD: _proto_json(signature_map)},
            }
        if route["action"] is None:
            request = get_model_status_pb2.GetModelStatusRequest(model_spec=_model_spec(route))
            return _proto_json(api.get_model_status(request))
        raise not_found(f"GET {self.path}: use POST for {route['action']}")

    def _post(self, route):
        if route["action"] in (":classify", ":regress"):
            raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                               f"{route['action'][1:]} is not implemented by usss-tf serve")
        if route["action"] != ":predict":
            raise not_found(f"POST {self.path}: only :predict is served")
        try:
            body = json.loads(self._body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise invalid_argument(f"request body is not JSON: {error}") from None
        signature_name = body.get("signature_name") if isinstance(body, dict) else None
        if signature_name is not None and not isinstance(signature_name, str):
            raise invalid_argument(f'"signature_name" must be a string, got {signature_name!r:.60}')
        spec = _model_spec(route)
        spec.signature_name = signature_name or contract.DEFAULT_SIGNATURE
        api = self.server.api
        with api.metrics.request(spec.name, "predict", "REST"):
            return self._predict(api, spec, body)

    def _predict(self, api, spec, body):
        # Resolve the signature first: decoding needs its input dtypes.
        loaded = api.resolve(spec)
        runner = loaded.runner(spec.signature_name, spec.name)
        with api.admission.slot(time.monotonic() + self.server.request_timeout):
            arrays, row_format = json_tensors.decode_request(body, runner.signature_def)
            outputs = runner.run(arrays)
        # JSON spends several bytes per value: refuse a reply that would dwarf
        # the message limit (e.g. full-resolution probabilities) before building it.
        values = sum(int(getattr(v, "size", 1)) for v in outputs.values())
        if 4 * values > self.server.max_body_bytes:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the reply holds {values:,} values, over what --max-message-mb allows as JSON "
                f"({self.server.max_body_bytes:,} bytes); use gRPC with output_filter "
                f'["class_ids"] (usss-tf predict does) or send smaller images',
            )
        return json_tensors.encode_response(outputs, row_format)


class RestServer(http.server.ThreadingHTTPServer):
    """The HTTP server: one thread per connection, bound to ``(host, port)``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, api, host, port, max_body_bytes, monitoring=False, request_timeout=60.0):
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.api = api
        self.max_body_bytes = max_body_bytes
        self.monitoring = monitoring  # serve metrics.METRICS_PATH
        self.request_timeout = request_timeout  # longest a request waits for a slot
        super().__init__((host, port), RestHandler)
