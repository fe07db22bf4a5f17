import base64

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from usss_tf.serving import json_tensors
from usss_tf.serving.status import RequestError


def _signature(**inputs):
    signature = meta_graph_pb2.SignatureDef()
    for name, dtype in inputs.items():
        signature.inputs[name].dtype = dtype.as_datatype_enum
    return signature


def test_row_and_columnar_requests_decode_to_the_same_arrays():
    signature = _signature(images=tf.string)
    png = b"\x89PNG fake"
    b64 = {"b64": base64.b64encode(png).decode()}
    rows, row_format = json_tensors.decode_request({"instances": [b64, b64]}, signature)
    columns, columnar = json_tensors.decode_request({"inputs": {"images": [b64, b64]}}, signature)
    assert row_format and not columnar
    assert rows["images"].tolist() == columns["images"].tolist() == [png, png]


def test_numbers_and_bad_values():
    signature = _signature(images=tf.uint8)
    arrays, _ = json_tensors.decode_request({"inputs": [[[[1, 2, 3]]]]}, signature)
    assert arrays["images"].dtype == np.uint8 and arrays["images"].shape == (1, 1, 1, 3)
    with pytest.raises(RequestError, match="rectangular"):
        json_tensors.decode_request({"inputs": [[1, 2], [3]]}, signature)
    with pytest.raises(RequestError, match="do not fit DT_UINT8"):
        json_tensors.decode_request({"inputs": [[300]]}, signature)
    with pytest.raises(RequestError, match="exactly one of"):
        json_tensors.decode_request({"instances": [1], "inputs": [1]}, signature)


def test_responses_in_row_and_columnar_form():
    outputs = {"class_ids": np.zeros((2, 1, 1), np.uint8), "name": np.array([b"a", b"b"], dtype=object)}
    rows = json_tensors.encode_response(outputs, row_format=True)
    assert rows["predictions"][1] == {"class_ids": [[0]], "name": {"b64": "Yg=="}}
    columns = json_tensors.encode_response({"class_ids": outputs["class_ids"]}, row_format=False)
    assert columns == {"outputs": [[[0]], [[0]]]}
