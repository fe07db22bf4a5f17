import grpc
import pytest
import tensorflow as tf

from usss_tf.serving import status


def test_codes_map_to_http_statuses():
    assert status.not_found("x").http_status == 404
    assert status.invalid_argument("x").http_status == 400
    assert status.RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, "x").http_status == 413
    assert status.RequestError(grpc.StatusCode.DATA_LOSS, "x").http_status == 500


def test_an_assertion_from_a_signature_keeps_only_its_message():
    @tf.function
    def signature(x):
        tf.debugging.Assert(x > 0, ["input 'images': image 0 is 6000x6000 (height x width)"])
        return x

    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        signature(tf.constant(-1))
    error = status.from_tf_error(raised.value, "signature 'segment_a'")
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "signature 'segment_a': input 'images': image 0 is 6000x6000 (height x width)"
