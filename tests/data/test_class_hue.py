"""Class hue: which classes are hue-free, and their labelled pixels turned (data.augment.class_hue)."""

import colorsys

import numpy as np
import tensorflow as tf

from usss_tf.data import class_hue
from usss_tf.domains import IGNORE_LABEL


def _hsv_pixel(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255.0


def test_hue_concentration_by_hand():
    image = np.zeros((2, 4, 3), np.float32)
    labels = np.full((2, 4), IGNORE_LABEL, np.int32)
    # Class 0: one hue at two saturations -> 1.
    image[0, 0], image[0, 1] = _hsv_pixel(0.1, 1.0, 1.0), _hsv_pixel(0.1, 0.5, 0.8)
    labels[0, :2] = 0
    # Class 1: red, cyan and green (hues 0, 1/2, 1/3) at saturation 1: |1 - 1 + e^(2 pi i / 3)| / 3.
    image[0, 2], image[0, 3], image[1, 0] = (_hsv_pixel(0.0, 1.0, 1.0), _hsv_pixel(0.5, 1.0, 1.0),
                                             _hsv_pixel(1 / 3, 1.0, 1.0))
    labels[0, 2:], labels[1, 0] = 1, 1
    # Class 2: grey only -> no mass. Ignored pixel: a saturated one that must not count.
    image[1, 1] = 128.0
    labels[1, 1] = 2
    image[1, 2] = _hsv_pixel(0.7, 1.0, 1.0)

    concentration, mass = class_hue.hue_concentration([image], [labels], 4)
    resultant = abs(1 + np.exp(1j * np.pi) + np.exp(2j * np.pi / 3)) / 3
    np.testing.assert_allclose(concentration[:2], [1.0, resultant], atol=1e-5)
    np.testing.assert_allclose(mass, [1.5, 3.0, 0.0, 0.0], atol=1e-5)
    free = class_hue.hue_free_classes([image], [labels], 4, max_concentration=0.8)
    assert free.tolist() == [False, True, False, False]  # No coloured pixel: never hue-free.


def test_only_hue_free_classes_turn_by_one_angle_per_class_and_crop():
    rng = np.random.default_rng(0)
    hues = rng.uniform(0, 1, (6, 8))
    image = np.stack([_hsv_pixel(h, 0.8, 0.7) for h in hues.ravel()]).reshape(6, 8, 3)
    labels = rng.integers(0, 3, (6, 8)).astype(np.int32)
    labels[0] = IGNORE_LABEL
    hue_free = tf.constant([False, True, True])
    seed = tf.constant([3, 4], tf.int64)

    out = class_hue.turn_class_hues(tf.constant(image), tf.constant(labels), hue_free, 1.0, seed).numpy()
    again = class_hue.turn_class_hues(tf.constant(image), tf.constant(labels), hue_free, 1.0, seed).numpy()
    np.testing.assert_array_equal(out, again)  # A function of the seed.
    unchanged = (labels == 0) | (labels == IGNORE_LABEL)
    np.testing.assert_array_equal(out[unchanged], image[unchanged])
    out_hsv = tf.image.rgb_to_hsv(out / 255.0).numpy()
    for c in (1, 2):
        shift = out_hsv[labels == c][:, 0] - hues[labels == c]
        assert abs(np.exp(2j * np.pi * shift).mean()) > 1 - 1e-4  # One angle for the class.
        np.testing.assert_allclose(out_hsv[labels == c][:, 1:] - [0.8, 0.7], 0.0, atol=2e-3)
    assert not np.allclose(out[labels == 1], image[labels == 1], atol=1.0)

    kept = class_hue.turn_class_hues(tf.constant(image), tf.constant(labels), hue_free, 0.0, seed).numpy()
    np.testing.assert_array_equal(kept, image)  # Probability 0: nothing turns.
    other = class_hue.turn_class_hues(tf.constant(image), tf.constant(labels), hue_free, 1.0,
                                      tf.constant([3, 5], tf.int64)).numpy()
    assert not np.allclose(other, out)


def test_a_run_records_the_classes_it_turned(tiny_run):
    import json

    from usss_tf import config as config_lib
    from usss_tf.data import pipeline, sources

    config = config_lib.load_config(tiny_run / "config.yaml")
    assert config.data.augment.class_hue
    recorded = json.loads((tiny_run / "run.json").read_text())["hue_free_classes"]
    for inputs in sources.prepare_domains(config, check=False):
        free = pipeline.labelled_hue_free_classes(inputs, config.data.augment.class_hue_max_concentration)
        assert recorded[inputs.domain.name] == [n for n, f in zip(inputs.domain.class_names, free) if f]
    assert any(recorded.values())


def test_a_resumed_run_keeps_the_classes_it_started_with(tiny_run, tmp_path):
    import json
    import shutil

    from usss_tf import config as config_lib
    from usss_tf import train as train_lib

    run = shutil.copytree(tiny_run, tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    recorded = {**info["hue_free_classes"], "synth_camvid": ["sky"]}  # As if another build had found sky.
    (run / "run.json").write_text(json.dumps({**info, "hue_free_classes": recorded}))
    lines = []
    experiment = train_lib.Experiment(config_lib.load_config(run / "config.yaml"), run, echo=lines.append)
    experiment.setup()
    assert experiment.hue_free["synth_camvid"].tolist() == [n == "sky" for n in experiment.inputs[1].domain.class_names]
    assert json.loads((run / "run.json").read_text())["hue_free_classes"] == recorded
    assert [line for line in lines if line.startswith("note: synth_camvid: the labelled images give")]
    assert "[data] synth_camvid: labelled crops turn the hue of sky (data.augment.class_hue)" in lines
