"""Fixtures for the serving tests: one real export of the tiny run, one in-process server.

Exporting costs ~30 s and starting a server a few seconds (load + warm-up), so
the export and the server are shared by the whole session. Tests that change
the model folder (a new version) work on their own copy of the export.
"""

import os
import pathlib
import shutil
import uuid

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from usss_tf import runs
from usss_tf.serving.server import ModelServer

MODEL = "usss"
# Small enough that the oversize test needs only a few MB, large enough for
# every normal reply of 32x64 images (probabilities of a batch of 3: 250 kB).
MAX_MESSAGE_MB = 2


def add_version(model_base, source, version):
    """Copies the export ``source`` in as ``model_base/<version>`` the way ``export_run`` does:
    into a non-integer folder first, then one rename."""
    staging = pathlib.Path(model_base) / f".copy-{uuid.uuid4().hex[:8]}"
    shutil.copytree(source, staging)
    os.rename(staging, pathlib.Path(model_base) / str(version))
    return pathlib.Path(model_base) / str(version)


@pytest.fixture(scope="session")
def trained(tiny_run):
    """The tiny run's Keras model, restored (the reference the served class ids must match)."""
    return runs.load_run(tiny_run)


@pytest.fixture(scope="session")
def exported(tiny_export):
    """Version 1 of the tiny run, exported with ``usss_tf.export.export_run`` (shared: read only)."""
    assert tiny_export.parent.name == MODEL
    return tiny_export


@pytest.fixture(scope="session")
def scene_pngs(tiny_run):
    """PNG bytes of three validation images of synth_city (32x64), as written by the generator."""
    root = pathlib.Path(tiny_run).parent / "data" / "synth_city" / "leftImg8bit" / "val"
    paths = sorted(root.rglob("*.png"))[:3]
    assert len(paths) == 3, root
    return [path.read_bytes() for path in paths]


def keras_class_ids(trained, pngs, domain):
    """Class ids the Keras model gives the decoded ``pngs`` in ``domain``'s label space."""
    images = np.stack([tf.io.decode_png(data, channels=3).numpy() for data in pngs])
    logits = trained.model(tf.constant(images, tf.float32))[domain]
    return np.argmax(np.asarray(logits), axis=-1).astype(np.uint8)


@pytest.fixture(scope="session")
def server(exported):
    """The embedded server over the export's model base, on free loopback ports."""
    with ModelServer(exported.parent, model_name=MODEL, port=0, rest_port=0,
                     max_message_mb=MAX_MESSAGE_MB, poll_seconds=0.5) as running:
        yield running


@pytest.fixture(scope="session")
def channel(server):
    with grpc.insecure_channel(server.grpc_address) as open_channel:
        yield open_channel


@pytest.fixture(scope="session")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(images, signature="segment_synth_city", model=MODEL, version=None, output_filter=()):
    """A PredictRequest built with the official protos; ``images`` is a list of bytes or a uint8 array."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if images is not None:
        dtype = tf.string if isinstance(images, list) else tf.uint8
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=dtype))
    request.output_filter.extend(output_filter)
    return request
