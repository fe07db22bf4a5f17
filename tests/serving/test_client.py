"""``usss-tf predict`` (the official-stubs client) end to end against the embedded server."""

import io
import socket

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from usss_tf import domains as domain_registry
from usss_tf.cli import main
from usss_tf.errors import ServingError
from usss_tf.serving import client

from .conftest import keras_class_ids


def _predict(*args):
    return CliRunner().invoke(main, ["predict", *map(str, args)])


@pytest.fixture
def image_files(tmp_path, scene_pngs):
    """Two 32x64 PNGs, the third scene as BMP (the client re-encodes it as PNG), a 16x32 PNG."""
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for index, data in enumerate(scene_pngs[:2]):
        paths.append(folder / f"scene{index}.png")
        paths[-1].write_bytes(data)
    Image.open(io.BytesIO(scene_pngs[2])).save(folder / "scene2.bmp")
    Image.open(io.BytesIO(scene_pngs[2])).resize((32, 16)).save(folder / "small.png")
    return paths + [folder / "scene2.bmp", folder / "small.png"]


@pytest.mark.slow
def test_predict_writes_class_ids_and_overlays(server, trained, scene_pngs, image_files, tmp_path):
    out = tmp_path / "out"
    result = _predict("--server", server.grpc_address, "--domain", "synth_camvid", *image_files, "--out", out)
    assert result.exit_code == 0, result.output
    expected = keras_class_ids(trained, scene_pngs, "synth_camvid")
    palette = np.asarray(domain_registry.get_domain("synth_camvid").palette, np.uint8)
    for index, stem in enumerate(["scene0", "scene1", "scene2"]):
        ids = Image.open(out / f"{stem}_ids.png")
        assert ids.mode == "L" and ids.size == (64, 32)
        np.testing.assert_array_equal(np.asarray(ids), expected[index])
        overlay = np.asarray(Image.open(out / f"{stem}_overlay.png"), np.float32)
        image = np.asarray(Image.open(io.BytesIO(scene_pngs[index])).convert("RGB"), np.float32)
        blended = 0.5 * image + 0.5 * palette[expected[index]]
        assert np.abs(overlay - blended).max() <= 1.0
    # A different size went in its own request and came back at its own size.
    assert Image.open(out / "small_ids.png").size == (32, 16)
    assert str(out / "small_overlay.png") in result.output


def test_predict_a_pinned_version(server, image_files, tmp_path):
    result = _predict("--server", server.grpc_address, "--version", 1, "--domain", "synth_city",
                      image_files[0], "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args, words", [
    (["--domain", "mars"], ["no domain 'mars'", "synth_city", "synth_camvid"]),
    (["--domain", "synth_city", "--model", "other"], ["model 'other'", "NOT_FOUND"]),
    (["--domain", "synth_city", "--version", "7"], ["version 7", "NOT_FOUND"]),
])
def test_server_side_errors_are_one_line(server, image_files, tmp_path, args, words):
    result = _predict("--server", server.grpc_address, *args, image_files[0], "--out", tmp_path / "out")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and server.grpc_address in line
    for word in words:
        assert word in line, (word, line)


def test_a_file_that_is_not_an_image_is_named(server, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    result = _predict("--server", server.grpc_address, "--domain", "synth_city", bad, "--out", tmp_path / "out")
    assert result.exit_code == 2 and str(bad) in result.output and "not an image" in result.output


def test_an_unreachable_server_is_named(image_files, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    result = _predict("--server", address, "--domain", "synth_city", "--timeout", 5, image_files[0],
                      "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert f"cannot reach server {address}" in result.output


def test_two_images_with_one_stem_are_refused(tmp_path, image_files):
    other = tmp_path / "other"
    other.mkdir()
    twin = other / image_files[0].name
    twin.write_bytes(image_files[0].read_bytes())
    with pytest.raises(ServingError, match="would both write scene0_ids.png"):
        client.predict_files("127.0.0.1:1", "synth_city", [image_files[0], twin], tmp_path / "out")


def test_an_unregistered_domain_gets_a_generated_palette():
    palette = client.domain_palette("not_registered", num_classes=5)
    assert palette.shape == (5, 3) and len({tuple(c) for c in palette}) == 5
    registered = client.domain_palette("synth_city", num_classes=10)
    assert [tuple(c) for c in registered] == list(domain_registry.get_domain("synth_city").palette)
