"""keras-hub backbones from local preset folders: stride-8 features, normalisation, and a
trained model that exports and serves through one."""

import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

keras_hub = pytest.importorskip("keras_hub")

from usss_tf import config as config_lib  # noqa: E402
from usss_tf import export, runs  # noqa: E402
from usss_tf.errors import ConfigError  # noqa: E402
from usss_tf.model.backbones import build_backbone  # noqa: E402
from usss_tf.model.preprocessing import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from usss_tf.serving.server import ModelServer  # noqa: E402


def tiny_resnet(pre_activation=False):
    """A ResNet (v1, or v2 with pre-activation) small enough for tests, random weights."""
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 16, 16, 16], stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=pre_activation, image_shape=(None, None, 3),
    )


@pytest.fixture(scope="module")
def resnet_preset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resnet_preset")
    tiny_resnet().save_to_preset(str(folder))
    # A converter that wants 0..1 pixels, unlike the ImageNet default.
    keras_hub.layers.ResNetImageConverter(scale=1 / 255.0, offset=0.0).save_to_preset(str(folder))
    return folder


@pytest.mark.parametrize("pre_activation", [False, True], ids=["resnet_v1", "resnet_v2"])
def test_resnet_presets_give_stride_8_features_at_any_size(tmp_path, pre_activation):
    tiny_resnet(pre_activation).save_to_preset(str(tmp_path))
    encoder = build_backbone("hub", weights=tmp_path)
    for height, width in ((64, 96), (67, 93)):
        features = encoder(np.zeros((1, height, width, 3), np.float32))
        assert features.shape == (1, -(-height // 8), -(-width // 8), 256)


def test_the_presets_image_converter_is_honoured(resnet_preset):
    encoder = build_backbone("hub", weights=resnet_preset)
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    normalised = (pixels - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    seen = encoder.get_layer("input_normalization")(tf.constant(normalised, tf.float32))
    np.testing.assert_allclose(seen, pixels / 255.0, atol=1e-5)


def test_the_preset_weights_are_loaded(resnet_preset):
    stored = keras_hub.models.Backbone.from_preset(str(resnet_preset))
    encoder = build_backbone("hub", weights=resnet_preset)
    pyramid = next(layer for layer in encoder.layers if hasattr(layer, "layers"))
    assert len(pyramid.weights) == len(stored.weights)
    for loaded, weight in zip(pyramid.weights, stored.weights):
        np.testing.assert_array_equal(loaded.numpy(), weight.numpy())


def test_fixed_size_and_missing_presets_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="is not a keras-hub preset folder"):
        build_backbone("hub", weights=tmp_path)
    keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1, 1, 1], num_layers=4, layerwise_num_heads=[1, 1, 1, 1],
        layerwise_sr_ratios=[8, 4, 2, 1], max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3, 3, 3],
        layerwise_strides=[4, 2, 2, 2], hidden_dims=[8, 8, 16, 16], image_shape=(64, 64, 3),
    ).save_to_preset(str(tmp_path / "mit"))
    with pytest.raises(ConfigError, match=r"MiTBackbone built for a fixed input size \(64, 64\)"):
        build_backbone("hub", weights=tmp_path / "mit")
    with pytest.raises(ConfigError, match="key 'model.backbone_weights': backbone 'hub' needs"):
        config_lib.config_from_dict({
            "domains": [{"name": "synth_city", "root": "data"}], "model": {"backbone": "hub"},
        })


@pytest.mark.slow
def test_a_hub_encoder_trains_exports_and_serves(resnet_preset, train_tiny, tmp_path):
    run_dir = train_tiny(tmp_path, model={
        "backbone": "hub", "backbone_weights": str(resnet_preset),
        "embedding_dim": 8, "centroids_per_class": 2,
    })
    run = runs.load_run(run_dir)
    assert run.finished
    version = export.export_run(run_dir, model_base=tmp_path / "saved_models" / "usss")
    assert json.loads((version / "assets" / "domains.json").read_text())["format"] == 2
    images = np.random.default_rng(0).integers(0, 256, (1, 32, 64, 3), dtype=np.uint8)
    expected = run.model.segment(tf.constant(images, tf.float32), "synth_city")["class_ids"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "usss"
    request.model_spec.signature_name = "segment_synth_city_tensor"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.uint8))
    request.output_filter.append("class_ids")
    with ModelServer(version.parent, model_name="usss", port=0, rest_port=0) as server:
        with grpc.insecure_channel(server.grpc_address) as channel:
            reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["class_ids"]), expected)
