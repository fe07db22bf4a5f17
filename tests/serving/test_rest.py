"""The embedded server's REST API (TF Serving's JSON format) over a real export."""

import base64
import http.client
import json
import urllib.parse

import numpy as np
import pytest

from usss_tf import testing
from usss_tf.serving import contract

from .conftest import MAX_MESSAGE_MB, MODEL, keras_class_ids


def _http(server, method, path, body=None):
    """(status, parsed JSON) of one request; ``body`` is sent as JSON unless it is bytes."""
    address = urllib.parse.urlsplit(server.rest_address)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    try:
        payload = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _b64(data):
    return {"b64": base64.b64encode(data).decode("ascii")}


def test_status(server):
    status, body = _http(server, "GET", f"/v1/models/{MODEL}")
    assert status == 200
    assert body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert _http(server, "GET", f"/v1/models/{MODEL}/versions/1")[0] == 200


def test_metadata_lists_every_signature(server):
    status, body = _http(server, "GET", f"/v1/models/{MODEL}/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": MODEL, "version": "1", "signature_name": ""}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == sorted(contract.signature_names(["synth_city", "synth_camvid"]))
    assert signatures["segment_synth_city"]["inputs"]["images"]["dtype"] == "DT_STRING"
    assert signatures["segment_synth_camvid"]["outputs"]["class_ids"]["dtype"] == "DT_UINT8"


def test_predict_rows_with_b64_images_match_the_keras_model(server, trained, scene_pngs):
    body = {"signature_name": "segment_synth_camvid", "instances": [_b64(p) for p in scene_pngs]}
    status, answer = _http(server, "POST", f"/v1/models/{MODEL}:predict", body)
    assert status == 200, answer
    rows = answer["predictions"]
    assert len(rows) == 3 and set(rows[0]) == {"class_ids", "probabilities"}
    served = np.array([row["class_ids"] for row in rows], dtype=np.uint8)
    np.testing.assert_array_equal(served, keras_class_ids(trained, scene_pngs, "synth_camvid"))


def test_predict_columnar_with_a_version_and_named_inputs(server, trained, scene_pngs):
    body = {"signature_name": "segment_synth_city", "inputs": {"images": [_b64(scene_pngs[0])]}}
    status, answer = _http(server, "POST", f"/v1/models/{MODEL}/versions/1:predict", body)
    assert status == 200, answer
    np.testing.assert_array_equal(np.array(answer["outputs"]["class_ids"], np.uint8),
                                  keras_class_ids(trained, scene_pngs[:1], "synth_city"))
    assert np.array(answer["outputs"]["probabilities"]).shape == (1, 32, 64, 10)


def test_predict_the_tensor_signature_with_pixel_rows(server, trained, scene_pngs):
    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(scene_pngs[0])).convert("RGB"))
    body = {"signature_name": "segment_synth_city_tensor", "instances": [{"images": pixels.tolist()}]}
    status, answer = _http(server, "POST", f"/v1/models/{MODEL}:predict", body)
    assert status == 200, answer
    np.testing.assert_array_equal(np.array([answer["predictions"][0]["class_ids"]], np.uint8),
                                  keras_class_ids(trained, scene_pngs[:1], "synth_city"))


@pytest.mark.parametrize("path, body, status, words", [
    (f"/v1/models/{MODEL}:predict", b"{not json", 400, ["not JSON"]),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "segment_mars", "instances": ["x"]}, 404, ["segment_mars"]),
    (f"/v1/models/nope:predict", {"instances": ["x"]}, 404, ["model 'nope'"]),
    (f"/v1/models/{MODEL}/versions/9:predict", {"instances": ["x"]}, 404, ["version 9"]),
    (f"/v1/models/{MODEL}:predict", {"instances": [_b64(b"not an image")]}, 400, ["not a PNG or JPEG"]),
    (f"/v1/models/{MODEL}:predict", {"instances": [_b64(testing.zero_png(6000, 6000))]}, 400,
     ["image 0 is 6000x6000", "max_image_pixels"]),
    (f"/v1/models/{MODEL}:predict", {"instances": [{"b64": "%%%"}]}, 400, ["not valid base64"]),
    (f"/v1/models/{MODEL}:predict", {"instances": [], "inputs": []}, 400, ["exactly one of"]),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "segment_synth_city_tensor", "instances": [[[1, 2], [3]]]},
     400, ["rectangular"]),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "segment_synth_city_tensor", "inputs": [[[[300, 0, 0]]]]},
     400, ["DT_UINT8"]),
    (f"/v1/models/{MODEL}:predict", {"signature_name": "segment_synth_city_tensor", "inputs": [[[1, 2, 3]]]},
     400, ["[?,?,?,3]", "[1,1,3]"]),
    (f"/v1/models/{MODEL}:classify", {"examples": []}, 501, ["classify"]),
    ("/v2/anything", {}, 404, ["malformed request"]),
])
def test_bad_requests_get_an_error_and_the_server_keeps_serving(server, scene_pngs, path, body, status, words):
    got, answer = _http(server, "POST", path, body)
    assert got == status, answer
    assert set(answer) == {"error"}
    for word in words:
        assert word in answer["error"], (word, answer)
    good = {"instances": [_b64(scene_pngs[0])]}
    assert _http(server, "POST", f"/v1/models/{MODEL}:predict", good)[0] == 200


def test_an_oversize_body_is_refused_with_413(server, scene_pngs):
    too_big = json.dumps({"instances": ["x" * int(MAX_MESSAGE_MB * 1024 * 1024)]}).encode()
    address = urllib.parse.urlsplit(server.rest_address)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    connection.request("POST", f"/v1/models/{MODEL}:predict", body=too_big)
    response = connection.getresponse()
    assert response.status == 413 and "--max-message-mb" in json.loads(response.read())["error"]
    assert response.getheader("Connection") == "close"  # the server ends the connection and says so
    connection.close()
    assert _http(server, "POST", f"/v1/models/{MODEL}:predict", {"instances": [_b64(scene_pngs[0])]})[0] == 200


def test_a_reply_too_big_for_json_is_refused_and_the_server_keeps_serving(server, scene_pngs):
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((400, 400, 3), 128, np.uint8)).save(buffer, format="PNG")
    status, answer = _http(server, "POST", f"/v1/models/{MODEL}:predict",
                           {"instances": [_b64(buffer.getvalue())]})
    assert status == 413 and "output_filter" in answer["error"], answer
    assert _http(server, "POST", f"/v1/models/{MODEL}:predict", {"instances": [_b64(scene_pngs[0])]})[0] == 200
