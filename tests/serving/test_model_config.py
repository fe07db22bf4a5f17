"""TF Serving's model config file: parsed with its own protos, several models, policies, labels, reload."""

import pathlib
import time

import grpc
import pytest

from usss_tf.errors import ServingError
from usss_tf.serving.model_config import ModelEntry, parse_model_config, read_model_config
from usss_tf.serving.server import ModelServer

from .conftest import add_version, predict_request

REPO = pathlib.Path(__file__).resolve().parents[2]

TWO_MODELS = """
model_config_list {{
  config {{
    name: "city"
    base_path: "/models/city"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 }} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
  config {{
    name: "camvid"
    base_path: "{camvid}"
    model_version_policy {{ {camvid_policy} }}
  }}
}}
"""


def test_the_committed_config_serves_saved_models_through_the_docker_mount():
    (entry,) = read_model_config(REPO / "saved_models" / "models.config", {"/models": "saved_models"})
    assert entry == ModelEntry("usss", pathlib.Path("saved_models/usss"), "latest", 1, (), ())


def test_policies_labels_and_mounts(tmp_path):
    text = TWO_MODELS.format(camvid=tmp_path / "camvid", camvid_policy="all {}")
    city, camvid = parse_model_config(text, "m.config", {"/models": str(tmp_path)})
    assert (city.name, city.base_path, city.policy, city.versions, city.labels) == (
        "city", tmp_path / "city", "specific", (1,), (("stable", 1),))
    assert (camvid.policy, camvid.base_path) == ("all", tmp_path / "camvid")
    assert city.select([1, 2, 3]) == [1] and camvid.select([1, 3, 2]) == [3, 2, 1]
    assert ModelEntry("x", tmp_path, "latest", 2).select([1, 2, 3]) == [3, 2]


@pytest.mark.parametrize("text, fragment", [
    ("model_config_list { config { base_path: '/m' } }", "config[0]: name is required"),
    ("model_config_list { config { name: 'a' base_path: 'relative' } }", "must be absolute"),
    ("model_config_list { config { name: 'a' base_path: '/m' } config { name: 'a' base_path: '/n' } }",
     "model 'a' is configured twice"),
    ("model_config_list { config { name: 'a' base_path: '/m' model_platform: 'pytorch' } }", "'pytorch'"),
    ("model_config_list { config { name: 'a' base_path: '/m' "
     "model_version_policy { specific { versions: 2 } } version_labels { key: 's' value: 1 } } }",
     "version_labels point at version(s) [1]"),
    ("model_config_list { config { name: 'a' base_path: '/m' modle_platform: 'x' } }", "not a ModelServerConfig"),
    ("", "configures no model"),
])
def test_bad_configs_name_the_file_and_field(text, fragment):
    with pytest.raises(ServingError, match=None) as raised:
        parse_model_config(text, "m.config")
    assert fragment in str(raised.value) and str(raised.value).startswith("m.config")


def _wait_for(condition, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001 - not yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"not met within {seconds}s")


@pytest.mark.slow
def test_two_models_specific_versions_a_label_and_a_reload(exported, tmp_path, scene_pngs):
    for model, versions in (("city", (1, 2)), ("camvid", (1,))):
        (tmp_path / model).mkdir()
        for version in versions:
            add_version(tmp_path / model, exported, version)
    config = tmp_path / "models.config"
    config.write_text(TWO_MODELS.format(camvid="/models/camvid", camvid_policy="latest { num_versions: 1 }"))
    with ModelServer(None, port=0, rest_port=None, model_config_file=config, mounts={"/models": str(tmp_path)},
                     config_poll_seconds=0.2) as server:
        assert server.models.names() == ["camvid", "city"]
        assert server.models.get("city").version == 1  # specific: 1, although 2 is newer
        with pytest.raises(Exception, match="does not serve version 2: its version policy is 'specific'"):
            server.models.get("city", 2)
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_address))
        request = predict_request(scene_pngs[:1], model="city", output_filter=["class_ids"])
        request.model_spec.version_label = "stable"
        assert stub.Predict(request, timeout=60).model_spec.version.value == 1
        request.model_spec.version_label = "canary"
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=60)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "stable=1" in raised.value.details()
        camvid = predict_request(scene_pngs[:1], model="camvid", output_filter=["class_ids"])
        assert stub.Predict(camvid, timeout=60).model_spec.version.value == 1

        # Edit the file: camvid goes away, city serves its latest version.
        config.write_text('model_config_list { config { name: "city" base_path: "/models/city" } }')
        _wait_for(lambda: server.models.names() == ["city"] and server.models.get("city").version == 2)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(camvid, timeout=60)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "serves: 'city'" in raised.value.details()
        # A file that no longer parses is logged; the models keep serving.
        config.write_text("model_config_list { oops")
        time.sleep(1.0)
        assert server.models.get("city").version == 2
