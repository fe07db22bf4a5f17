"""The server under load: back-pressure shared by gRPC and REST, metrics, shutdown with requests in flight."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import prediction_service_pb2_grpc

from usss_tf.serving.metrics import METRICS_PATH
from usss_tf.serving.server import ModelServer
from usss_tf.testing import free_ports

from .conftest import MODEL, predict_request


@pytest.fixture
def small_server(exported):
    """A server with one request slot and no queue, monitoring on."""
    server = ModelServer(exported.parent, port=0, rest_port=0, max_inflight=1, max_queued=0,
                         monitoring=True).start()
    yield server
    server.stop(grace=1)


def _stub(server):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_address))


def _rest(server, method, path, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    connection.request(method, path, body=None if body is None else json.dumps(body))
    response = connection.getresponse()
    return response.status, response.read()


def test_beyond_the_limit_both_front_ends_refuse_at_once(small_server, scene_pngs):
    stub = _stub(small_server)
    good = predict_request(scene_pngs[:1], output_filter=["class_ids"])
    body = {"instances": [{"b64": __import__("base64").b64encode(scene_pngs[0]).decode()}]}
    with small_server.api.admission.slot():  # The one slot is taken.
        started = time.perf_counter()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(good, timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server busy" in refused.value.details()
        status, payload = _rest(small_server, "POST", f"/v1/models/{MODEL}:predict", body)
        assert status == 429 and b"busy" in payload
        assert time.perf_counter() - started < 30  # Refused, not queued until the timeout.
    assert small_server.api.metrics.counts[(MODEL, "RESOURCE_EXHAUSTED")] == 2  # REST's too
    assert stub.Predict(good, timeout=60).outputs["class_ids"].tensor_shape.dim[1].size == 32
    status, _ = _rest(small_server, "POST", f"/v1/models/{MODEL}:predict", body)
    assert status == 200


def test_a_refused_upload_gets_its_429_not_a_reset(small_server):
    """The busy refusal reads the body it drops: a client still sending sees the 429."""
    body = b"x" * (16 << 20)  # more than loopback's socket buffers hold
    with small_server.api.admission.slot():
        connection = http.client.HTTPConnection("127.0.0.1", small_server.rest_port, timeout=60)
        connection.request("POST", f"/v1/models/{MODEL}:predict", body=body)
        response = connection.getresponse()
        assert response.status == 429 and b"busy" in response.read()
        assert response.getheader("Connection") == "close"


def _samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_a_known_mix_of_requests(small_server, scene_pngs):
    stub = _stub(small_server)
    for _ in range(2):
        stub.Predict(predict_request(scene_pngs[:1], output_filter=["class_ids"]), timeout=60)
    with pytest.raises(grpc.RpcError):
        stub.Predict(predict_request(scene_pngs[:1], "segment_mars"), timeout=60)
    with pytest.raises(grpc.RpcError):
        stub.Predict(predict_request(np.zeros((1, 8, 8, 3), np.uint8)), timeout=60)
    b64 = __import__("base64").b64encode(scene_pngs[0]).decode()
    assert _rest(small_server, "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"b64": b64}]})[0] == 200
    status, page = _rest(small_server, "GET", METRICS_PATH)
    assert status == 200
    samples = _samples(page.decode())
    count = ":tensorflow:serving:request_count"
    assert samples[(count, (("model_name", MODEL), ("status", "OK")))] == 3
    assert samples[(count, (("model_name", MODEL), ("status", "NOT_FOUND")))] == 1
    assert samples[(count, (("model_name", MODEL), ("status", "INVALID_ARGUMENT")))] == 1
    latency = ":tensorflow:serving:request_latency_count"
    assert samples[(latency, (("API", "predict"), ("entrypoint", "GRPC"), ("model_name", MODEL)))] == 4
    assert samples[(latency, (("API", "predict"), ("entrypoint", "REST"), ("model_name", MODEL)))] == 1
    assert samples[("usss_serving_loaded_versions", (("model_name", MODEL),))] == 1
    assert samples[("usss_serving_inflight_requests", ())] == 0


def test_made_up_model_names_share_one_series(small_server, scene_pngs):
    """Each label value is a series kept for the server's life: names it does not serve are
    counted under model_name="", however many a client sends."""
    stub = _stub(small_server)
    for index in range(20):
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(predict_request(scene_pngs[:1], model=f"made-up-{index}"), timeout=60)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert _rest(small_server, "POST", f"/v1/models/other-{index}:predict", {"instances": []})[0] == 404
    samples = _samples(_rest(small_server, "GET", METRICS_PATH)[1].decode())
    names = {dict(labels)["model_name"] for _, labels in samples if "model_name" in dict(labels)}
    assert names <= {MODEL, ""}, names
    assert samples[(":tensorflow:serving:request_count", (("model_name", ""), ("status", "NOT_FOUND")))] == 40
    latency = ":tensorflow:serving:request_latency_count"
    assert samples[(latency, (("API", "predict"), ("entrypoint", "REST"), ("model_name", "")))] == 20


def test_without_monitoring_there_is_no_metrics_page(exported):
    with ModelServer(exported.parent, port=0, rest_port=0) as server:
        assert _rest(server, "GET", METRICS_PATH)[0] == 404


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish(exported, tmp_path):
    """A large request is running when SIGTERM arrives: it is answered, then the server exits 0."""
    ports = [str(p) for p in free_ports(2)]
    process = subprocess.Popen(
        [sys.executable, "-m", "usss_tf.cli", "serve", "--model-base", str(exported.parent),
         "--port", ports[0], "--rest-port", ports[1], "--monitoring", "--grace-seconds", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        _wait_for(lambda: _rest_port_answers(ports[1]), 120)
        images = np.random.default_rng(0).integers(0, 256, (4, 1024, 2048, 3), dtype=np.uint8)
        request = predict_request(images, "segment_synth_city_tensor", output_filter=["class_ids"])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(
            f"127.0.0.1:{ports[0]}", options=[("grpc.max_receive_message_length", 1 << 30),
                                               ("grpc.max_send_message_length", 1 << 30)]))
        result = {}
        thread = threading.Thread(target=lambda: result.update(
            reply=stub.Predict(request, timeout=300)))
        thread.start()
        _wait_for(lambda: _inflight(ports[1]) == 1, 60)
        process.send_signal(signal.SIGTERM)
        thread.join(300)
        assert result["reply"].outputs["class_ids"].tensor_shape.dim[0].size == 4
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "SIGTERM received" in process.stdout.read()




def _rest_port_answers(port):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=2)
        connection.request("GET", f"/v1/models/{MODEL}")
        return connection.getresponse().status == 200
    except OSError:
        return False


def _inflight(port):
    connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
    connection.request("GET", METRICS_PATH)
    return _samples(connection.getresponse().read().decode())[("usss_serving_inflight_requests", ())]


def _wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {seconds}s")
