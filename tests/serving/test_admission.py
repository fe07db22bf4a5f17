import threading
import time

import grpc
import pytest

from usss_tf.serving.admission import Admission
from usss_tf.serving.status import RequestError


def test_running_queued_and_refused():
    admission = Admission(max_inflight=1, max_queued=1)
    release, started, order = threading.Event(), threading.Event(), []

    def first():
        with admission.slot():
            started.set()
            release.wait(10)
            order.append("first")

    def second():
        with admission.slot():
            order.append("second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    started.wait(10)
    threads[1].start()
    while admission.admitted < 2:  # The second one is queued.
        time.sleep(0.01)
    assert admission.full() and admission.running == 1
    with pytest.raises(RequestError) as refused:
        with admission.slot():
            pass
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.http_status == 429 and "1 requests running and 1 queued" in refused.value.message
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first", "second"] and admission.admitted == 0 and not admission.full()


def test_a_request_whose_deadline_passes_in_the_queue_leaves_it():
    admission = Admission(max_inflight=1, max_queued=4)
    with admission.slot():
        with pytest.raises(RequestError) as late:
            with admission.slot(deadline=time.monotonic() + 0.05):
                pass
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert admission.admitted == 0
