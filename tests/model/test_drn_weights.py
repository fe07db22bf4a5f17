"""The Keras DRN-D computes what the published PyTorch DRN-D computes with the same weights.

The fixtures (``fixtures/make_drn_fixtures.py``, run with PyTorch) hold
reduced-width DRN-D-22 and D-38 checkpoints with the official key names, in
the zip and the legacy format, and PyTorch's stride-8 features for an even-
and an odd-sized input. ``USSS_DRN_PARITY_DIR`` adds a folder written by the
same script (e.g. ``--width 1`` for the full networks) to the parity test.
"""

import os
import pathlib
import pickle
import shutil
import zipfile

import numpy as np
import pytest

from usss_tf.errors import ConfigError
from usss_tf.model import pth
from usss_tf.model.backbones import build_backbone, convert_weights
from usss_tf.model.drn_weights import expected_keys

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TOLERANCE = 1e-4  # max |keras - torch| / max |torch|: float32 summation order only.


def _parity_cases():
    folders = [FIXTURES]
    if os.environ.get("USSS_DRN_PARITY_DIR"):
        folders.append(pathlib.Path(os.environ["USSS_DRN_PARITY_DIR"]))
    for folder in folders:
        for expected in sorted(folder.glob("*_expected.npz")):
            variant = expected.name[: -len("_expected.npz")]
            for checkpoint in sorted(folder.glob(f"{variant}*.pth")):
                yield pytest.param(variant, checkpoint, expected, id=f"{folder.name}-{checkpoint.stem}")


@pytest.mark.parametrize("variant,checkpoint,expected", list(_parity_cases()))
def test_drn_features_equal_pytorch_on_even_and_odd_sizes(variant, checkpoint, expected):
    reference = np.load(expected)
    model = build_backbone(variant, weights=checkpoint, width=float(reference["width"]))
    for size in ("even", "odd"):
        got = model(reference[f"{size}_images"], training=False).numpy()
        want = reference[f"{size}_features"]
        assert got.shape == want.shape
        error = np.abs(got - want).max() / np.abs(want).max()
        assert error < TOLERANCE, f"{checkpoint.name} {size}: max relative error {error:.2e}"


def test_a_checkpoint_of_another_depth_names_the_missing_and_unexpected_keys():
    with pytest.raises(ConfigError) as error:
        build_backbone("drn_d_22", weights=FIXTURES / "drn_d_38.pth", width=1 / 32)
    message = str(error.value)
    assert "drn_d_38.pth: not a checkpoint of drn_d_22" in message
    assert "unexpected keys: layer3.2.bn1.bias" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="missing keys: layer3.2.bn1.bias"):
        build_backbone("drn_d_38", weights=FIXTURES / "drn_d_22.pth", width=1 / 32)


def test_a_checkpoint_of_another_width_names_the_first_shape_mismatch():
    # Width 0.039: stages 6-8 have 20 channels instead of 16, the structure is the same.
    with pytest.raises(ConfigError, match=r"key 'layer6.0.conv1.weight' has shape \(16, 8, 3, 3\), "
                                          r"drn_d_22 expects \(20, 8, 3, 3\)"):
        build_backbone("drn_d_22", weights=FIXTURES / "drn_d_22.pth", width=0.039)


def test_every_weight_of_the_backbone_has_an_official_key():
    model = build_backbone("drn_d_22", width=1 / 32)
    keys = expected_keys(model)
    assert len(keys) == len(model.weights)
    assert {"layer0.0.weight", "layer0.1.running_mean", "layer3.0.downsample.0.weight",
            "layer3.0.conv1.weight", "layer7.0.weight", "layer8.1.running_var"} <= set(keys)
    state = pth.load_state_dict(FIXTURES / "drn_d_22.pth")
    assert {"fc.weight", "fc.bias", "layer0.1.num_batches_tracked"} <= set(state)


def test_bottleneck_variants_have_the_official_keys():
    model = build_backbone("drn_d_54", width=1 / 32)
    keys = set(expected_keys(model))
    assert {"layer3.0.conv3.weight", "layer3.0.bn3.running_var", "layer6.2.conv2.weight"} <= keys
    assert model.output.shape[-1] == 16  # Stage 8 keeps 512 x width channels.


def test_converted_weights_load_as_keras_weights(tmp_path):
    out = tmp_path / "drn_d_22.weights.h5"
    convert_weights(FIXTURES / "drn_d_22.pth", "drn_d_22", out, width=1 / 32)
    reference = np.load(FIXTURES / "drn_d_22_expected.npz")
    model = build_backbone("drn_d_22", weights=out, width=1 / 32)
    got = model(reference["odd_images"], training=False).numpy()
    np.testing.assert_allclose(got, reference["odd_features"], atol=1e-4 * np.abs(got).max())
    with pytest.raises(ConfigError, match="must end in .weights.h5"):
        convert_weights(FIXTURES / "drn_d_22.pth", "drn_d_22", tmp_path / "x.h5", width=1 / 32)


def test_pytorch_checkpoints_only_load_into_drn(tmp_path):
    with pytest.raises(ConfigError, match="PyTorch checkpoint; those load into the DRN-D backbones"):
        build_backbone("erfnet", weights=FIXTURES / "drn_d_22.pth", width=0.125)


# -- the .pth reader ---------------------------------------------------------------------


def test_zip_and_legacy_files_hold_the_same_tensors():
    modern = pth.load_state_dict(FIXTURES / "drn_d_22.pth")
    legacy = pth.load_state_dict(FIXTURES / "drn_d_22_legacy.pth")
    assert list(modern) == list(legacy)
    for key in modern:
        np.testing.assert_array_equal(modern[key], legacy[key])
    assert modern["layer0.0.weight"].dtype == np.float32
    assert modern["layer0.1.num_batches_tracked"].dtype == np.int64


def test_truncated_and_foreign_files_fail_naming_the_file(tmp_path):
    data = (FIXTURES / "drn_d_22_legacy.pth").read_bytes()
    cut = tmp_path / "cut_legacy.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=f"{cut}: .*truncated"):
        pth.load_state_dict(cut)
    zipped = (FIXTURES / "drn_d_22.pth").read_bytes()
    cut_zip = tmp_path / "cut.pth"
    cut_zip.write_bytes(zipped[: len(zipped) // 2])
    with pytest.raises(ConfigError, match=str(cut_zip)):
        pth.load_state_dict(cut_zip)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=f"{text}: not a PyTorch checkpoint"):
        pth.load_state_dict(text)
    with pytest.raises(ConfigError, match="file not found"):
        pth.load_state_dict(tmp_path / "absent.pth")


def test_a_storage_missing_from_the_zip_is_named(tmp_path):
    source, damaged = FIXTURES / "drn_d_22.pth", tmp_path / "damaged.pth"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(damaged, "w") as out:
        members = archive.namelist()
        dropped = next(n for n in members if "/data/" in n)
        for name in members:
            if name != dropped:
                out.writestr(name, archive.read(name))
    with pytest.raises(ConfigError, match=f"storage {dropped} is missing"):
        pth.load_state_dict(damaged)


class _RunsCode:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent",))


def test_a_checkpoint_cannot_run_code(tmp_path):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(
        pickle.dumps(pth.LEGACY_MAGIC) + pickle.dumps(pth.LEGACY_PROTOCOL)
        + pickle.dumps({"little_endian": True}) + pickle.dumps(_RunsCode())
    )
    with pytest.raises(ConfigError, match="refers to shutil.rmtree, which is not part of a plain state dict"):
        pth.load_state_dict(evil)
