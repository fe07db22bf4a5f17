"""The embedded model server behind ``usss-tf serve``: TF Serving's gRPC and REST APIs.

``ModelServer`` ties together a ``ModelStore`` (the model's versions under
``model_base``, watched for new ones), the gRPC services on the official
``tensorflow_serving.apis`` stubs and the REST API, both answering from a
thread pool. It binds loopback by default: there is no authentication, so
listening on other interfaces is an explicit ``--host`` choice.

Message size: gRPC refuses a request (or a reply) larger than
``max_message_mb`` itself, before any of our code runs, with
RESOURCE_EXHAUSTED -- the status TF Serving's own server gives for the same
case. The REST API answers an oversize body with HTTP 413. The limit applies to
replies too, so keep it above the largest answer a client asks for (the
``probabilities`` of a batch are 4 bytes x pixels x classes; clients that only
need the class ids send ``output_filter: ["class_ids"]``).

``serve`` runs a server until SIGTERM or SIGINT, then stops it gracefully and
returns: new predict requests are refused with UNAVAILABLE (REST 503) at once,
the admitted ones finish, and the connections stay open a short drain period
after the last one so that its reply reaches the client before they close (a
connection closed under a client still reading a large reply resets it and the
reply is lost).
"""

import concurrent.futures
import pathlib
import logging
import signal
import threading
import time

import grpc

from usss_tf.errors import ServingError
from usss_tf.serving import contract
from usss_tf.serving.admission import DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_QUEUED, Admission
from usss_tf.serving.api import ServingApi
from usss_tf.serving.grpc_service import add_services
from usss_tf.serving.metrics import METRICS_PATH
from usss_tf.serving.model_config import ModelEntry
from usss_tf.serving.models import ModelRegistry
from usss_tf.serving.rest import RestServer

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_MB = 64
DEFAULT_POLL_SECONDS = 2.0
DEFAULT_DRAIN_SECONDS = 2.0


def _host_port(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ModelServer:
    """One model served over gRPC (``port``) and REST (``rest_port``; ``None`` turns it off).

    Port 0 picks a free port; ``grpc_port`` / ``rest_port`` hold the bound
    ones after ``start``. Usable as a context manager.
    """

    def __init__(self, model_base, model_name=contract.DEFAULT_MODEL_NAME, host="127.0.0.1",
                 port=contract.DEFAULT_GRPC_PORT, rest_port=contract.DEFAULT_REST_PORT,
                 max_message_mb=DEFAULT_MAX_MESSAGE_MB, poll_seconds=DEFAULT_POLL_SECONDS,
                 max_inflight=DEFAULT_MAX_INFLIGHT, max_queued=DEFAULT_MAX_QUEUED, monitoring=False,
                 model_config_file=None, mounts=None, config_poll_seconds=0.0):
        if model_config_file is not None:
            self.models = ModelRegistry(config_file=model_config_file, mounts=mounts,
                                        poll_seconds=poll_seconds,
                                        config_poll_seconds=config_poll_seconds)
        else:
            self.models = ModelRegistry([ModelEntry(model_name, pathlib.Path(model_base))],
                                        poll_seconds=poll_seconds)
        self.api = ServingApi(self.models, Admission(max_inflight, max_queued))
        self.monitoring = monitoring
        self.host = host
        self.grpc_port = port
        self.rest_port = rest_port
        self.max_message_bytes = int(max_message_mb * 1024 * 1024)
        # Threads for every admitted predict request plus a few for status and
        # metadata; gRPC refuses calls beyond (RESOURCE_EXHAUSTED) before reading them.
        self.max_workers = self.api.admission.capacity + 4
        self._grpc = None
        self._rest = None
        self._rest_thread = None

    @property
    def grpc_address(self):
        return _host_port(self.host, self.grpc_port)

    @property
    def rest_address(self):
        return None if self.rest_port is None else f"http://{_host_port(self.host, self.rest_port)}"

    def start(self):
        self.api.drain.reopen()
        self.models.start()
        try:
            self._start_grpc()
            if self.rest_port is not None:
                self._start_rest()
        except BaseException:
            self.stop(grace=0)
            raise
        return self

    def _start_grpc(self):
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            # Without this, a second server on a busy port binds "successfully" on Linux.
            ("grpc.so_reuseport", 0),
        ]
        executor = concurrent.futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="grpc")
        self._grpc = grpc.server(executor, options=options, maximum_concurrent_rpcs=self.max_workers)
        add_services(self._grpc, self.api)
        try:
            self.grpc_port = self._grpc.add_insecure_port(_host_port(self.host, self.grpc_port))
        except RuntimeError as error:
            raise ServingError(f"gRPC cannot listen on {self.grpc_address} (port in use?): {error}") from None
        self._grpc.start()

    def _start_rest(self):
        try:
            self._rest = RestServer(self.api, self.host, self.rest_port, self.max_message_bytes,
                                    monitoring=self.monitoring)
        except OSError as error:
            raise ServingError(f"REST cannot listen on {self.rest_address}: {error.strerror or error}") from None
        self.rest_port = self._rest.server_address[1]
        self._rest_thread = threading.Thread(target=self._rest.serve_forever, name="rest", daemon=True)
        self._rest_thread.start()

    def stop(self, grace=5.0, drain_seconds=DEFAULT_DRAIN_SECONDS):
        """Stops taking requests, lets in-flight ones finish for up to ``grace`` seconds.

        Predict requests arriving meanwhile are refused with UNAVAILABLE. The
        transports close ``drain_seconds`` after the last reply was sent (within
        ``grace``), so that its client has read it before the connection goes.
        """
        grace = grace or 0.0  # None: at once, as grpc's stop takes it
        deadline = time.monotonic() + grace
        drain = self.api.drain
        drain.close()
        if grace > 0 and drain.wait(grace) and drain.last_finished is not None:
            linger = min(drain.last_finished + drain_seconds, deadline) - time.monotonic()
            if linger > 0:
                time.sleep(linger)
        if self._grpc is not None:
            self._grpc.stop(max(deadline - time.monotonic(), 0.0)).wait()
            self._grpc = None
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest = None
        self.models.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def serve(server, echo=print, grace=5.0):
    """Starts ``server``, prints its addresses, serves until SIGTERM/SIGINT, stops it gracefully.

    Call from the main thread (signal handlers can only be set there).
    """
    stopping = threading.Event()
    received = []

    def on_signal(number, _frame):
        received.append(signal.Signals(number).name)
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        for store in server.models.stores():
            loaded = [str(version) for version, error in store.statuses() if error is None]
            echo(f"model '{store.name}' from {store.model_base}: "
                 f"version {', '.join(loaded) if loaded else 'none yet (waiting for one)'}")
        echo(f"gRPC listening on {server.grpc_address}")
        if server.rest_address:
            echo(f"REST listening on {server.rest_address}/v1/models/<name> "
                 f"({', '.join(server.models.names())})")
            if server.monitoring:
                echo(f"metrics at {server.rest_address}{METRICS_PATH}")
        while not stopping.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
        echo(f"{received[0]} received; shutting down")
    finally:
        server.stop(grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
