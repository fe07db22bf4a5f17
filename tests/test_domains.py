"""Tests for usss_tf.domains: the registry and the built-in label spaces."""

import json

import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cityscapes_labels

from usss_tf import domains
from usss_tf.errors import ConfigError, UnknownDomainError

BUILTIN = ("camvid", "cityscapes", "idd", "sunrgbd", "synth_camvid", "synth_city")


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so tests can register freely."""
    monkeypatch.setattr(domains, "_REGISTRY", dict(domains._REGISTRY))
    return domains


def _toy(name="toy", **overrides):
    fields = dict(
        name=name,
        layout="camvid",
        class_names=("a", "b"),
        palette=((1, 2, 3), (4, 5, 6)),
        raw_to_train=((10, 0), (20, 1)),
    )
    fields.update(overrides)
    return domains.Domain(**fields)


def test_builtin_domains_are_registered():
    assert set(BUILTIN) <= set(domains.registered_domains())
    assert domains.registered_domains() == sorted(domains.registered_domains())
    for name in BUILTIN:
        assert domains.get_domain(name).name == name


def test_unknown_domain_error_lists_registered_names():
    with pytest.raises(UnknownDomainError) as error:
        domains.get_domain("mapillary")
    message = str(error.value)
    assert message.startswith("unknown domain 'mapillary'; registered domains: ")
    assert ", ".join(domains.registered_domains()) in message
    # Also a KeyError, so dict-style callers can catch it.
    assert isinstance(error.value, KeyError)


def test_get_domain_passes_domain_objects_through():
    domain = _toy()
    assert domains.get_domain(domain) is domain


def test_cityscapes_uses_official_table():
    domain = domains.get_domain("cityscapes")
    assert domain.num_classes == 19
    assert domain.layout == "cityscapes"
    assert domain.class_names[0] == "road" and domain.class_names[13] == "car"
    assert domain.palette[0] == (128, 64, 128)
    table = domain.lookup_table()
    assert table.dtype == np.uint8 and table.shape == (256,)
    assert table[7] == 0  # road
    assert table[26] == 13  # car
    assert table[0] == domains.IGNORE_LABEL  # unlabeled
    assert table[255] == domains.IGNORE_LABEL
    for label in cityscapes_labels.labels:
        if label.id >= 0:
            expected = label.trainId if 0 <= label.trainId < 19 else 255
            assert table[label.id] == expected, label.name


def test_camvid_idd_sunrgbd_tables():
    camvid = domains.get_domain("camvid").lookup_table()
    assert camvid.tolist()[:11] == list(range(11))
    assert camvid[11] == 255

    idd = domains.get_domain("idd")
    assert idd.num_classes == 26
    assert idd.class_names[8] == "autorickshaw" and idd.class_names[25] == "sky"
    assert idd.lookup_table()[:26].tolist() == list(range(26))
    assert idd.lookup_table()[26] == 255

    sun = domains.get_domain("sunrgbd")
    assert sun.num_classes == 37
    table = sun.lookup_table()
    assert table[0] == 255 and table[1] == 0 and table[37] == 36 and table[38] == 255
    assert sun.class_names[0] == "wall" and sun.class_names[36] == "bag"


def test_synthetic_label_spaces_differ():
    city = domains.get_domain("synth_city")
    camvid = domains.get_domain("synth_camvid")
    assert city.synthetic and camvid.synthetic
    assert city.num_classes == 10 and camvid.num_classes == 7
    # synth_city writes real Cityscapes labelIds.
    for raw, train in city.raw_to_train:
        assert cityscapes_labels.id2label[raw].name == city.class_names[train]
    assert city.lookup_table()[0] == 255
    # synth_camvid merges car + truck and has no fence or pole.
    assert "vehicle" in camvid.class_names
    assert not {"fence", "pole", "car", "truck"} & set(camvid.class_names)
    assert camvid.lookup_table()[domains.SYNTH_CAMVID_VOID] == 255


def test_colorize_paints_ignore_black():
    domain = domains.get_domain("camvid")
    ids = np.array([[0, 3], [255, 11]], dtype=np.uint8)
    colors = domain.colorize(ids)
    assert colors.dtype == np.uint8 and colors.shape == (2, 2, 3)
    assert tuple(colors[0, 0]) == domain.palette[0]
    assert tuple(colors[0, 1]) == domain.palette[3]
    assert colors[1].tolist() == [[0, 0, 0], [0, 0, 0]]  # ignore, out of range
    assert domain.colorize(np.array([-1, 2], dtype=np.int32))[0].tolist() == [0, 0, 0]
    with pytest.raises(TypeError, match="integer"):
        domain.colorize(np.zeros(3, dtype=np.float32))


def test_config_round_trip_through_json():
    for name in BUILTIN:
        domain = domains.get_domain(name)
        config = json.loads(json.dumps(domain.get_config()))
        assert domains.Domain.from_config(config) == domain


def test_from_config_names_bad_keys():
    config = _toy().get_config()
    with pytest.raises(ConfigError, match=r"domain 'toy': unknown keys \['colour'\]"):
        domains.Domain.from_config({**config, "colour": 1})
    del config["palette"]
    with pytest.raises(ConfigError, match=r"missing keys \['palette'\]"):
        domains.Domain.from_config(config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"name": "Bad Name"}, "name must be"),
        ({"palette": ((1, 2, 3),)}, "palette has 1 colours for 2 classes"),
        ({"palette": ((1, 2, 3), (4, 5, 300))}, "colour of class 'b'"),
        ({"class_names": ("a", "a")}, "duplicate class names"),
        ({"raw_to_train": ((10, 0), (10, 1))}, "raw id 10 is mapped twice"),
        ({"raw_to_train": ((256, 0),)}, "raw id 256 is outside"),
        ({"raw_to_train": ((10, 2),)}, "maps to train id 2"),
    ],
)
def test_invalid_domains_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        _toy(**overrides)
    assert "domain" in str(error.value)


def test_domain_is_frozen_and_hashable():
    domain = _toy(class_names=["a", "b"], raw_to_train=[[10, 0], [20, 1]])
    assert domain.class_names == ("a", "b")
    assert domain.raw_to_train == ((10, 0), (20, 1))
    assert hash(domain) == hash(_toy())
    with pytest.raises(AttributeError):
        domain.name = "other"


def test_register_domain_refuses_duplicates(registry):
    toy = registry.register_domain(_toy())
    assert registry.get_domain("toy") is toy
    with pytest.raises(ConfigError, match="'toy' is already registered"):
        registry.register_domain(_toy(description="second"))
    replacement = _toy(description="second")
    registry.register_domain(replacement, overwrite=True)
    assert registry.get_domain("toy") is replacement
    with pytest.raises(TypeError):
        registry.register_domain({"name": "dict"})


def test_lookup_table_ignores_unlisted_ids():
    table = _toy().lookup_table()
    assert table[10] == 0 and table[20] == 1
    assert np.count_nonzero(table != 255) == 2
