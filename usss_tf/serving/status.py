"""Request failures as TF Serving reports them: a canonical status code and a message.

Every layer of the embedded server (model store, signature runner, gRPC and
REST front ends) raises ``RequestError`` for a request it cannot answer. The
gRPC servicers turn it into ``context.abort(code, message)``; the REST handler
into ``{"error": message}`` with the HTTP status TF Serving uses for that code.
TensorFlow's own errors carry the same canonical codes (``tf.errors.OpError
.error_code`` is the gRPC code number), so ``from_tf_error`` keeps them.
"""

import re

import grpc

from usss_tf.errors import ServingError

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# HTTP statuses of TF Serving's REST API (tensorflow_serving/util/net_http's
# ToHTTPStatusCode): client mistakes are 4xx, everything else 500.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class RequestError(ServingError):
    """One request failed with ``code`` (a ``grpc.StatusCode``); the server carries on."""

    def __init__(self, code, message, http_status=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status  # e.g. 429 for overload (RESOURCE_EXHAUSTED is 413 otherwise)

    @property
    def http_status(self):
        return self._http_status or _HTTP_STATUS.get(self.code, 500)


def not_found(message):
    return RequestError(grpc.StatusCode.NOT_FOUND, message)


def invalid_argument(message):
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


# Noise TensorFlow wraps around an op's message in graph mode: the
# "Graph execution error" banner, the Python trace of where the node was
# defined, the node names and the "[Op:...]" suffix.
_NOISE = (
    re.compile(r"\{\{function_node [^}]*\}\}"),
    re.compile(r"\{\{node [^}]*\}\}"),
    re.compile(r"\s*\[Op:[^\]]*\]"),
    re.compile(r"\[\[[^\]]*\]\]"),
)


_ASSERTION = re.compile(r"assertion failed: \[(?P<text>.*)\]\s*$")


def clean_tf_message(message):
    """The human part of a TensorFlow error message, on one line.

    A ``tf.debugging.Assert`` inside a signature (how an export reports bytes
    that are not an image, or mixed sizes) arrives as ``assertion failed:
    [<its message>]`` with quotes escaped; only its message is kept.
    """
    lines = []
    for line in str(message).splitlines():
        stripped = line.strip()
        if (not stripped or stripped.startswith(("Graph execution error", "Detected at node", "File "))
                or stripped.startswith("[[")):
            continue
        for pattern in _NOISE:
            stripped = pattern.sub("", stripped).strip()
        if stripped:
            lines.append(stripped)
    text = " ".join(lines).replace("<stack traces unavailable>", "").strip()
    assertion = _ASSERTION.search(text)
    if assertion:
        text = assertion.group("text").replace("\\'", "'").replace('\\"', '"')
    return text or str(message).strip()


def from_tf_error(error, where):
    """A ``RequestError`` with the code of ``error`` (a ``tf.errors.OpError``), prefixed by ``where``."""
    code = _CODES_BY_NUMBER.get(getattr(error, "error_code", None), grpc.StatusCode.INTERNAL)
    return RequestError(code, f"{where}: {clean_tf_message(getattr(error, 'message', error))}")
