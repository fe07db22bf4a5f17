"""Graceful shutdown: refuse new predict requests, let the open ones deliver their replies.

A predict call is open from the moment a front end takes it until its reply
has been handed to the transport and its handler has returned (gRPC: the
call's termination callback and the handler; REST: from the body read to
the response written). On shutdown the server ``close``s the drain: every new
predict is refused with UNAVAILABLE (REST 503), so a client retries on another
replica; it then ``wait``s for the open calls. The transports must stay up a
moment longer: closing a connection while its client is still reading a large
reply makes the kernel reset it, and the client loses the reply.
"""

import threading
import time

import grpc

from usss_tf.serving.status import RequestError


class Drain:
    """Counts open predict calls; once closed, refuses new ones."""

    def __init__(self):
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.open_calls = 0
        self.closed_reason = None
        self.last_finished = None  # time.monotonic() when the latest call delivered its reply

    def close(self, reason="the server is shutting down"):
        """Refuses every call from now on; open ones carry on."""
        with self._lock:
            self.closed_reason = reason

    def started(self):
        """Opens one call, or raises UNAVAILABLE once the drain is closed."""
        with self._lock:
            if self.closed_reason is not None:
                raise RequestError(grpc.StatusCode.UNAVAILABLE,
                                   f"{self.closed_reason}; retry on another replica or after the restart")
            self.open_calls += 1

    def finished(self):
        """Closes one call opened by ``started``: its reply is with the transport."""
        with self._lock:
            self.open_calls -= 1
            self.last_finished = time.monotonic()
            self._idle.notify_all()

    def reopen(self):
        """Takes calls again (a server started after a stop)."""
        with self._lock:
            self.closed_reason = None

    def closer(self, parts):
        """A callable that closes the call opened by ``started`` on its ``parts``-th call.

        A gRPC call ends twice: its handler returns, and the transport is done
        with it (the termination callback, which fires at once on cancellation,
        with the handler still running). It is closed when both have happened.
        """
        remaining = [parts]
        lock = threading.Lock()

        def part_done():
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self.finished()

        return part_done

    def wait(self, timeout=None):
        """Waits until no call is open; False if ``timeout`` seconds passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self.open_calls == 0, timeout)
