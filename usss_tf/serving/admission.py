"""Back-pressure: one bound on the predict requests in flight, shared by gRPC and REST.

At most ``max_inflight`` requests run a signature at once; up to
``max_queued`` more wait for a slot. A request beyond that is refused at once
with RESOURCE_EXHAUSTED (REST 429), so a burst costs the server a bounded
number of threads and request buffers, never unbounded memory. A waiting
request whose deadline passes (the client gave up) leaves the queue with
DEADLINE_EXCEEDED instead of keeping a worker busy.
"""

import contextlib
import threading
import time

import grpc

from usss_tf.serving.status import RequestError

DEFAULT_MAX_INFLIGHT = 4
DEFAULT_MAX_QUEUED = 16


class Admission:
    """Admits, queues or refuses requests.

    Args:
      max_inflight: requests running at once (each runs the model on the CPU
        or accelerator; more than the cores rarely helps).
      max_queued: requests waiting for a slot; beyond, requests are refused.
    """

    def __init__(self, max_inflight=DEFAULT_MAX_INFLIGHT, max_queued=DEFAULT_MAX_QUEUED):
        if max_inflight < 1 or max_queued < 0:
            raise ValueError("max_inflight must be >= 1 and max_queued >= 0")
        self.max_inflight = int(max_inflight)
        self.max_queued = int(max_queued)
        self._slots = threading.Semaphore(self.max_inflight)
        self._lock = threading.Lock()
        self.admitted = 0  # running + waiting
        self.running = 0

    @property
    def capacity(self):
        """Requests admitted at most (running + queued): what the front ends size their threads by."""
        return self.max_inflight + self.max_queued

    def full(self):
        """Whether a request arriving now would be refused (a hint: a slot may free meanwhile)."""
        return self.admitted >= self.capacity

    @contextlib.contextmanager
    def slot(self, deadline=None):
        """Holds a slot for one request; ``deadline`` is a ``time.monotonic()`` instant or None."""
        with self._lock:
            if self.full():
                raise RequestError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server busy: {self.running} requests running and {self.admitted - self.running} "
                    f"queued (limits --max-inflight {self.max_inflight}, --max-queued "
                    f"{self.max_queued}); retry later",
                    http_status=429,
                )
            self.admitted += 1
        try:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not self._slots.acquire(timeout=timeout):
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   "the request's deadline passed while it waited for a free slot")
            with self._lock:
                self.running += 1
            try:
                yield
            finally:
                with self._lock:
                    self.running -= 1
                self._slots.release()
        finally:
            with self._lock:
                self.admitted -= 1
