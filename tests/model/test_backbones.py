import pytest

from usss_tf import config as config_lib
from usss_tf.errors import ConfigError
from usss_tf.model import backbones
from usss_tf.model.drn import DRN_D_VARIANTS


def test_the_config_and_the_factory_know_the_same_backbones():
    assert config_lib.BACKBONES == ("erfnet", *DRN_D_VARIANTS, backbones.HUB)


def test_unknown_backbone_and_missing_weights_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="key 'model.backbone': unknown backbone 'resnet'"):
        backbones.build_backbone("resnet")
    with pytest.raises(ConfigError, match="key 'model.backbone_weights': file not found"):
        backbones.build_backbone("erfnet", width=0.125, weights=tmp_path / "none.weights.h5")
