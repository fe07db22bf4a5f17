import threading

import grpc
import pytest

from usss_tf.serving.drain import Drain
from usss_tf.serving.status import RequestError


def test_a_closed_drain_refuses_new_calls_and_waits_for_the_open_one():
    drain = Drain()
    drain.started()
    assert drain.closed_reason is None and drain.open_calls == 1
    drain.close("going away")
    with pytest.raises(RequestError) as refused:
        drain.started()
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE and refused.value.http_status == 503
    assert refused.value.message.startswith("going away; retry")
    assert not drain.wait(0.05)  # the open call holds it
    assert drain.last_finished is None
    finisher = threading.Timer(0.1, drain.finished)
    finisher.start()
    assert drain.wait(10)
    assert drain.open_calls == 0 and drain.last_finished is not None


def test_a_call_in_two_parts_closes_when_both_are_done_and_reopen_takes_calls_again():
    drain = Drain()
    drain.started()
    part_done = drain.closer(parts=2)
    part_done()  # e.g. gRPC's termination callback on a cancelled call: the handler still runs
    assert drain.open_calls == 1 and not drain.wait(0.01)
    part_done()  # the handler returned
    assert drain.open_calls == 0 and drain.wait(0)
    drain.close()
    drain.reopen()
    drain.started()
    assert drain.open_calls == 1
