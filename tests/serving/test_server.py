"""The embedded server over a real export of the tiny run, through the official gRPC stubs."""

import concurrent.futures
import io
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.python.tools import saved_model_utils
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    regression_pb2,
)

from usss_tf import testing
from usss_tf.serving import contract
from usss_tf.serving.server import ModelServer

from .conftest import MODEL, add_version, keras_class_ids, predict_request


def _metadata(predictions, version=None):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    if version is not None:
        request.model_spec.version.value = version
    response = predictions.GetModelMetadata(request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    return response, signature_map


def _resized_png(png, height, width):
    image = Image.open(io.BytesIO(png)).resize((width, height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _ids(response):
    return tf.make_ndarray(response.outputs["class_ids"])


def test_served_class_ids_match_the_keras_model(predictions, trained, scene_pngs):
    for domain in ("synth_city", "synth_camvid"):
        response = predictions.Predict(
            predict_request(scene_pngs, f"segment_{domain}"), timeout=60)
        assert response.model_spec.version.value == 1
        assert response.model_spec.signature_name == f"segment_{domain}"
        expected = keras_class_ids(trained, scene_pngs, domain)
        np.testing.assert_array_equal(_ids(response), expected)
        probabilities = tf.make_ndarray(response.outputs["probabilities"])
        assert probabilities.shape == (3, 32, 64, trained.domain(domain).num_classes)


def test_tensor_signature_and_serving_default_agree_with_the_bytes_signature(predictions, scene_pngs):
    by_bytes = _ids(predictions.Predict(predict_request(scene_pngs), timeout=60))
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(p)).convert("RGB")) for p in scene_pngs])
    by_tensor = _ids(predictions.Predict(predict_request(pixels, "segment_synth_city_tensor"), timeout=60))
    by_default = _ids(predictions.Predict(predict_request(scene_pngs, ""), timeout=60))
    np.testing.assert_array_equal(by_tensor, by_bytes)
    np.testing.assert_array_equal(by_default, by_bytes)


def test_embed_labels_one_image_in_every_label_space(predictions, scene_pngs):
    response = predictions.Predict(predict_request(scene_pngs[:1], "embed"), timeout=60)
    assert set(response.outputs) == {"embeddings", "nearest_class_synth_city", "nearest_class_synth_camvid"}
    assert tf.make_ndarray(response.outputs["nearest_class_synth_camvid"]).shape == (1, 32, 64)


def test_output_filter_returns_only_the_named_outputs(predictions, scene_pngs):
    response = predictions.Predict(predict_request(scene_pngs[:1], output_filter=["class_ids"]), timeout=60)
    assert list(response.outputs) == ["class_ids"]


def test_metadata_holds_the_real_signature_defs(predictions, exported):
    response, signature_map = _metadata(predictions)
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 1
    expected = contract.signature_names(["synth_city", "synth_camvid"])
    assert sorted(signature_map.signature_def) == sorted(expected)
    # The same SignatureDefs saved_model_cli shows, read by TensorFlow's own tool.
    on_disk = saved_model_utils.get_meta_graph_def(str(exported), "serve").signature_def
    for name in expected:
        assert signature_map.signature_def[name] == on_disk[name], name
    images = signature_map.signature_def["segment_synth_city"].inputs["images"]
    assert images.dtype == tf.string.as_datatype_enum


def test_status_is_available(channel):
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    (status,) = models.GetModelStatus(request, timeout=30).model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0


def _too_big():
    return predict_request([b"\x89PNG" + b"\0" * (3 * 1024 * 1024)])


def _extra_input(scene_pngs):
    request = predict_request(scene_pngs[:1])
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
    return request


# (case, request builder, expected code, words the message must contain)
BAD_REQUESTS = [
    ("unknown model", lambda p: predict_request(p[:1], model="nope"), grpc.StatusCode.NOT_FOUND,
     ["model 'nope'", "'usss'"]),
    ("unknown version", lambda p: predict_request(p[:1], version=99), grpc.StatusCode.NOT_FOUND,
     ["version 99", "versions on disk: 1"]),
    ("unknown signature", lambda p: predict_request(p[:1], "segment_mars"), grpc.StatusCode.NOT_FOUND,
     ["segment_mars", "segment_synth_city"]),
    ("missing input", lambda p: predict_request(None), grpc.StatusCode.INVALID_ARGUMENT,
     ["missing input(s) 'images'"]),
    ("extra input", _extra_input, grpc.StatusCode.INVALID_ARGUMENT, ["unexpected input(s) 'extra'"]),
    ("wrong dtype", lambda p: predict_request(np.zeros((1, 32, 64, 3), np.uint8)),
     grpc.StatusCode.INVALID_ARGUMENT, ["input 'images'", "DT_STRING", "DT_UINT8"]),
    ("wrong rank", lambda p: predict_request(np.zeros((32, 64, 3), np.uint8), "segment_synth_city_tensor"),
     grpc.StatusCode.INVALID_ARGUMENT, ["input 'images'", "[?,?,?,3]", "[32,64,3]"]),
    ("wrong channels", lambda p: predict_request(np.zeros((1, 32, 64, 4), np.uint8), "segment_synth_city_tensor"),
     grpc.StatusCode.INVALID_ARGUMENT, ["input 'images'", "[?,?,?,3]", "[1,32,64,4]"]),
    ("non-image bytes", lambda p: predict_request([p[0], b"not an image"]), grpc.StatusCode.INVALID_ARGUMENT,
     ["element 1", "not a PNG or JPEG"]),
    ("mixed sizes", lambda p: predict_request([p[0], _resized_png(p[1], 16, 32)]),
     grpc.StatusCode.INVALID_ARGUMENT, ["same size", "32x64", "16x32"]),
    ("unknown output_filter", lambda p: predict_request(p[:1], output_filter=["class_ids", "logits"]),
     grpc.StatusCode.INVALID_ARGUMENT, ["'logits'", "'probabilities'"]),
    ("oversize message", lambda p: _too_big(), grpc.StatusCode.RESOURCE_EXHAUSTED, ["larger than max"]),
    ("decompression bomb", lambda p: predict_request([p[0], testing.zero_png(6000, 6000)]),
     grpc.StatusCode.INVALID_ARGUMENT, ["image 1 is 6000x6000", "36000000 pixels", "max_image_pixels"]),
    ("jpeg bomb", lambda p: predict_request([testing.jpeg_declaring(8000, 4000, progressive=True)]),
     grpc.StatusCode.INVALID_ARGUMENT, ["image 0 is 4000x8000", "max_image_pixels"]),
]


@pytest.mark.parametrize("case, build, code, words", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_its_code_and_the_server_keeps_serving(predictions, scene_pngs, case, build, code,
                                                                words):
    with pytest.raises(grpc.RpcError) as raised:
        predictions.Predict(build(scene_pngs), timeout=60)
    assert raised.value.code() == code, raised.value.details()
    for word in words:
        assert word in raised.value.details(), (word, raised.value.details())
    good = predictions.Predict(predict_request(scene_pngs[:1], output_filter=["class_ids"]), timeout=60)
    assert _ids(good).shape == (1, 32, 64)


def test_metadata_without_a_field_is_invalid(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    with pytest.raises(grpc.RpcError) as raised:
        predictions.GetModelMetadata(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "signature_def" in raised.value.details()


def test_other_rpcs_are_unimplemented(channel, predictions, scene_pngs):
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    calls = [
        (predictions.Classify, classification_pb2.ClassificationRequest()),
        (predictions.Regress, regression_pb2.RegressionRequest()),
        (predictions.MultiInference, inference_pb2.MultiInferenceRequest()),
        (models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest()),
    ]
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as raised:
            method(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert _ids(predictions.Predict(predict_request(scene_pngs[:1]), timeout=60)).shape == (1, 32, 64)


def test_concurrent_clients_get_no_errors(server, trained, scene_pngs):
    expected = keras_class_ids(trained, scene_pngs[:2], "synth_city")

    def client(index):
        # Each thread has its own channel, like separate client processes.
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(25):
                response = stub.Predict(predict_request(scene_pngs[:2], output_filter=["class_ids"]), timeout=120)
                np.testing.assert_array_equal(_ids(response), expected)
        return index

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        finished = [future.result() for future in [pool.submit(client, i) for i in range(8)]]
    assert sorted(finished) == list(range(8))


def _wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.mark.slow
def test_a_new_version_is_served_without_a_restart(exported, tmp_path, scene_pngs):
    model_base = tmp_path / MODEL
    model_base.mkdir()
    add_version(model_base, exported, 1)
    (model_base / ".tmp-2-half-written").mkdir()  # a temporary export folder is ignored
    with ModelServer(model_base, model_name=MODEL, port=0, rest_port=None, poll_seconds=0.3) as running:
        with grpc.insecure_channel(running.grpc_address) as channel:
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_request(scene_pngs[:1], output_filter=["class_ids"])
            assert stub.Predict(request, timeout=60).model_spec.version.value == 1
            add_version(model_base, exported, 2)
            _wait_for(lambda: stub.Predict(request, timeout=60).model_spec.version.value == 2, timeout=120)
            # The replaced version stays reachable on request while it is on disk.
            pinned = predict_request(scene_pngs[:1], version=1, output_filter=["class_ids"])
            assert stub.Predict(pinned, timeout=60).model_spec.version.value == 1
            _, signature_map = _metadata(stub, version=2)
            assert "segment_synth_camvid" in signature_map.signature_def


def _read_line(process, prefix, timeout=120):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting {prefix!r}; got: {''.join(lines)}")


def test_sigterm_stops_a_serving_process_cleanly(exported, tmp_path, scene_pngs):
    model_base = tmp_path / MODEL
    model_base.mkdir()
    add_version(model_base, exported, 1)
    command = [sys.executable, "-m", "usss_tf.cli", "serve", "--model-base", str(model_base),
               "--port", "0", "--rest-port", "0", "--poll-seconds", "0.5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        address = _read_line(process, "gRPC listening on ").split()[-1]
        assert address.startswith("127.0.0.1:")
        _read_line(process, "REST listening on http://127.0.0.1:")
        with grpc.insecure_channel(address) as channel:
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(predict_request(scene_pngs[:1]), timeout=60).model_spec.version.value == 1
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "SIGTERM received; shutting down" in stdout and "stopped" in stdout


def test_serve_refuses_a_missing_model_base(tmp_path):
    from click.testing import CliRunner

    from usss_tf.cli import main

    result = CliRunner().invoke(main, ["serve", "--model-base", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "no such folder" in result.output and "usss-tf export" in result.output


def test_a_broken_version_is_skipped_and_the_previous_one_keeps_serving(exported, tmp_path, scene_pngs):
    model_base = tmp_path / MODEL
    model_base.mkdir()
    add_version(model_base, exported, 1)
    broken = model_base / ".broken"
    shutil.copytree(exported, broken)
    (broken / "saved_model.pb").write_bytes(b"not a saved model")
    os.rename(broken, model_base / "2")
    with ModelServer(model_base, model_name=MODEL, port=0, rest_port=None, poll_seconds=0.3) as running:
        statuses = dict(running.models.store(MODEL).statuses())
        assert statuses[1] is None and "cannot load" in statuses[2]
        loaded = running.models.get(MODEL)
        assert loaded.version == 1
        with pytest.raises(Exception, match="no version 2"):
            running.models.get(MODEL, 2)
    assert pathlib.Path(model_base / "1").is_dir()


def test_stopping_refuses_new_predicts_and_delivers_the_open_one(exported, tmp_path, scene_pngs):
    """``stop`` with a predict in flight (queued behind a slot the test holds): gRPC and REST
    predicts sent meanwhile are refused with UNAVAILABLE / 503 (counted in the metrics; model
    status says UNLOADING), ``stop`` waits for the open one, which gets its whole reply, and closes the connections ``drain_seconds`` after it."""
    import http.client
    import json
    import threading

    from tensorflow_serving.apis import prediction_service_pb2_grpc

    model_base = tmp_path / MODEL
    model_base.mkdir()
    add_version(model_base, exported, 1)
    running = ModelServer(model_base, model_name=MODEL, port=0, rest_port=0, max_inflight=1).start()
    held, release, stopped = threading.Event(), threading.Event(), {}

    def hold_the_only_slot():
        with running.api.admission.slot():
            held.set()
            release.wait(120)

    def stop():
        running.stop(grace=120, drain_seconds=1.0)
        stopped["at"] = time.monotonic()

    holder, stopper = threading.Thread(target=hold_the_only_slot), threading.Thread(target=stop)
    holder.start()
    assert held.wait(30)
    try:
        with grpc.insecure_channel(running.grpc_address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            reply = stub.Predict.future(predict_request(scene_pngs, output_filter=["class_ids"]), timeout=120)
            _wait_for(lambda: running.api.drain.open_calls == 1, timeout=60)
            stopper.start()
            _wait_for(lambda: running.api.drain.closed_reason is not None, timeout=60)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(predict_request(scene_pngs[:1]), timeout=60)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in refused.value.details()
            connection = http.client.HTTPConnection("127.0.0.1", running.rest_port, timeout=30)
            connection.request("POST", f"/v1/models/{MODEL}:predict",
                               body=json.dumps({"instances": [[[[0, 0, 0]]]]}))
            answer = connection.getresponse()
            assert answer.status == 503 and answer.getheader("Connection") == "close"
            assert "shutting down" in json.loads(answer.read())["error"]
            assert running.api.metrics.counts[(MODEL, "UNAVAILABLE")] == 2  # both refusals counted
            status = http.client.HTTPConnection("127.0.0.1", running.rest_port, timeout=30)
            status.request("GET", f"/v1/models/{MODEL}")
            states = [v["state"] for v in json.loads(status.getresponse().read())["model_version_status"]]
            assert states == ["UNLOADING"]  # a health check on model status sees the drain
            time.sleep(0.5)
            assert stopper.is_alive() and not reply.done()  # stop waits for the open call
            release.set()
            assert _ids(reply.result(timeout=120)).shape == (3, 32, 64)
        stopper.join(60)
        assert not stopper.is_alive() and running.api.drain.open_calls == 0
        assert stopped["at"] - running.api.drain.last_finished >= 0.95  # the drain period
    finally:
        release.set()
        holder.join(30)
        if stopper.ident is None:
            running.stop(grace=0)
