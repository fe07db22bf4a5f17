import re

import pytest
import yaml

from usss_tf import config as config_lib
from usss_tf.errors import ConfigError

BASE = {
    "name": "t",
    "domains": [
        {"name": "synth_city", "root": "/tmp/a", "labeled": 5},
        {"name": "synth_camvid", "root": "/tmp/b", "labeled": 5},
    ],
}


def _write(tmp_path, mapping):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


def test_load_with_overrides_including_list_items(tmp_path):
    config = config_lib.load_config(
        _write(tmp_path, BASE),
        ["train.steps=200", "domains.0.root=/data/cs", "data.crop=[64, 128]", "model.width=0.25"],
    )
    assert config.train.steps == 200
    assert config.domains[0].root == "/data/cs"
    assert config.data.crop == [64, 128]
    assert config.model.width == 0.25


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.stepz=3", "train.stepz"),
        ("domains.5.root=/x", "domains.5"),
        ("train.steps=many", "train.steps"),
        ("model.backbone=resnet", "model.backbone"),
        ("domains.1.name=nowhere", "nowhere"),
        ("novalue", "novalue"),
    ],
)
def test_bad_overrides_name_the_key(tmp_path, override, fragment):
    with pytest.raises(ConfigError) as error:
        config_lib.load_config(_write(tmp_path, BASE), [override])
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_wrong_type_and_unknown_key_in_file(tmp_path):
    bad = dict(BASE, train={"steps": "ten"})
    with pytest.raises(ConfigError, match=r"c.yaml: key 'train.steps': expected an integer"):
        config_lib.load_config(_write(tmp_path, bad))
    bad = dict(BASE, trian={"steps": 1})
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        config_lib.load_config(_write(tmp_path, bad))


def test_a_number_in_scientific_notation_without_a_dot_is_a_number(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-4`` as a string; a float key takes it as the number."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE) + "train:\n  learning_rate: 1e-4\n")
    config = config_lib.load_config(path, ["loss.consistency_feature=2.5E-3", "model.width=+5e-1"])
    assert config.train.learning_rate == 1e-4
    assert config.loss.consistency_feature == 0.0025 and config.model.width == 0.5
    with pytest.raises(ConfigError, match="key 'train.steps': expected an integer, got '1e3'"):
        config_lib.load_config(path, ["train.steps=1e3"])
    with pytest.raises(ConfigError, match="key 'model.width': expected a number, got 'e-4'"):
        config_lib.load_config(path, ["model.width=e-4"])


def test_unknown_domain_is_reported_with_the_key(tmp_path):
    bad = dict(BASE, domains=[{"name": "atlantis", "root": "/x"}])
    with pytest.raises(ConfigError, match=r"domains.0.name.*atlantis"):
        config_lib.load_config(_write(tmp_path, bad))


def test_round_trip_through_yaml(tmp_path):
    config = config_lib.load_config(_write(tmp_path, BASE))
    config_lib.save_config(config, tmp_path / "saved.yaml")
    assert config_lib.load_config(tmp_path / "saved.yaml") == config


@pytest.mark.parametrize("section, key, fragment", [
    (lambda: config_lib.TrainConfig(precision="fp8"), "train", "key 'train.precision': unknown precision 'fp8'"),
    (lambda: config_lib.DataConfig(crop=[30, 64]), "data", "key 'data.crop': height and width must be multiples of 8"),
    (lambda: config_lib.ModelConfig(backbone="vgg"), "model", "key 'model.backbone': unknown backbone 'vgg'"),
    (lambda: config_lib.ModelConfig(depth=1.5), "model", "key 'model.depth': expected 0 < depth <= 1, got 1.5"),
    (lambda: config_lib.ModelConfig(backbone="drn_d_22", depth=0.5, backbone_weights="drn_d_22-4bd2f8ea.pth"),
     "model", "key 'model.depth': 0.5 is not 1.0, but 'model.backbone_weights' (drn_d_22-4bd2f8ea.pth) holds "
     "the full-depth network"),
    (lambda: config_lib.ModelConfig(backbone="hub", depth=0.5, backbone_weights="presets/resnet"), "model",
     "key 'model.depth': 0.5 is not 1.0"),
    (lambda: config_lib.MaskedModellingConfig(mask_ratio=1.0), "masked_modelling",
     "key 'masked_modelling.mask_ratio': must be in (0, 1), got 1.0"),
    (lambda: config_lib.MaskedModellingConfig(patch=0), "masked_modelling",
     "key 'masked_modelling.patch': must be >= 1, got 0"),
    (lambda: config_lib.MaskedModellingConfig(augment="none"), "masked_modelling",
     "key 'masked_modelling.augment': expected one of: training, flips, got 'none'"),
    (lambda: config_lib.TrainConfig(masked_steps=-1), "train", "key 'train.masked_steps': must be >= 0"),
    (lambda: config_lib.AugmentConfig(class_hue_max_concentration=0.0), "data.augment",
     "key 'data.augment.class_hue_max_concentration': must be in (0, 1], got 0.0"),
    (lambda: config_lib.AugmentConfig(class_hue_probability=1.5), "data.augment",
     "key 'data.augment.class_hue_probability': must be in [0, 1], got 1.5"),
    (lambda: config_lib.DomainConfig(name="camvid", root="x", source="hub"), "domains.3",
     "key 'domains.3.source': expected one of: folder, tfds, got 'hub'"),
    (lambda: config_lib.DomainConfig(name="camvid", root="x", source="tfds"), "domains.0",
     "key 'domains.0.source': domain 'camvid' has no TFDS source"),
])
def test_each_section_validates_its_own_fields(section, key, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        section().validate(key)


def test_univ_full_has_its_own_defaults_and_the_config_wins():
    domains = [{"name": "synth_city", "root": "a"}]
    full = config_lib.config_from_dict({"method": "univ_full", "domains": domains})
    assert (full.loss.within_entropy, full.loss.cross_entropy) == (0.0, 0.0)
    assert (full.loss.consistency_feature, full.loss.consistency_paste) == (0.0, 0.0)
    assert full.train.masked_steps > 0 and full.loss.supervised == 1.0
    assert full.loss.embedding_supervision == 0.0 and full.loss.cross_domain_supervision == 1.0
    # The paper's weights are what univ_paper runs.
    paper = config_lib.config_from_dict({"method": "univ_paper", "domains": domains})
    assert (paper.loss.within_entropy, paper.loss.cross_entropy) == (0.1, 0.1)
    assert paper.loss.embedding_supervision == 1.0 and paper.loss.cross_domain_supervision == 0.0
    basic = config_lib.config_from_dict({"method": "univ_basic", "domains": domains})
    assert basic.loss.cross_domain_supervision == 0.0  # the baseline shares no labels
    # Built in Python, a config gets the same defaults as one read from YAML, where
    # null also means the method's default.
    assert config_lib.ExperimentConfig(method="univ_full").loss == full.loss
    assert config_lib.ExperimentConfig(method="univ_paper").loss == paper.loss
    partly_set = config_lib.ExperimentConfig(method="univ_full", loss=config_lib.LossConfig(
        supervised=2.0, cross_entropy=0.5))
    assert (partly_set.loss.within_entropy, partly_set.loss.cross_entropy) == (0.0, 0.5)
    nulls = config_lib.config_from_dict({"method": "univ_paper", "domains": domains,
                                         "loss": {"within_entropy": None}})
    assert nulls.loss == paper.loss
    with pytest.raises(ConfigError, match="key 'loss.cross_domain_supervision': no value"):
        config_lib.LossConfig().validate()
    set_in_file = config_lib.config_from_dict(
        {"method": "univ_full", "domains": domains, "loss": {"within_entropy": 0.3}},
        overrides=["loss.cross_entropy=0.2"])
    assert (set_in_file.loss.within_entropy, set_in_file.loss.cross_entropy) == (0.3, 0.2)
    assert set_in_file.loss.consistency_paste == 0.0
    # The method from an override picks the defaults.
    switched = config_lib.config_from_dict({"method": "univ_paper", "domains": domains},
                                           overrides=["method=univ_full"])
    assert switched.loss.within_entropy == 0.0
    # A saved config holds every key: reading it back changes nothing.
    saved = config_lib.config_from_dict(paper.to_dict(), overrides=["method=univ_full"])
    assert saved.loss.within_entropy == 0.1
    with pytest.raises(ConfigError, match="key 'loss': expected a mapping"):
        config_lib.config_from_dict({"method": "univ_full", "domains": domains, "loss": 3})
