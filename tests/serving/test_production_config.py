"""The committed TF Serving config parses as TF Serving's own ModelServerConfig proto."""

import pathlib

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

SAVED_MODELS = pathlib.Path(__file__).resolve().parents[2] / "saved_models"


def test_models_config_names_the_usss_model_under_the_mounted_folder():
    config = text_format.Parse((SAVED_MODELS / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "usss" and model.base_path == "/models/usss"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1
