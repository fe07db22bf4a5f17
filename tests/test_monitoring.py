"""TensorBoard output of a run, read back with TensorBoard's own event reader."""

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.projector import ProjectorConfig

from usss_tf import config as config_lib
from usss_tf import domains, monitoring, projector, runs
from usss_tf.errors import ConfigError

DOMAINS = {"synth_city": 10, "synth_camvid": 7}
WIDTH, HEIGHT = 64, 32  # the tiny run's validation images.


def _load(path):
    accumulator = event_accumulator.EventAccumulator(
        str(path), size_guidance={kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
    )
    accumulator.Reload()
    return accumulator


def _plugin(accumulator, tag):
    return accumulator.SummaryMetadata(tag).plugin_data.plugin_name


def _images(accumulator, tag):
    """{step: [decoded uint8 images]} of an image summary."""
    out = {}
    for event in accumulator.Tensors(tag):
        encoded = tf.make_ndarray(event.tensor_proto)  # [width, height, png, png, ...]
        out[event.step] = [tf.io.decode_png(png).numpy() for png in encoded[2:]]
    return out


@pytest.fixture(scope="module")
def validation(tiny_run):
    return _load(tiny_run / "tensorboard" / "validation")


def test_validation_scalars_and_per_class_iou(validation):
    tags = set(validation.Tags()["tensors"])
    for name, num_classes in DOMAINS.items():
        assert {f"miou/{name}", f"pixel_accuracy/{name}"} <= tags
        assert _plugin(validation, f"miou/{name}") == "scalars"
        per_class = [t for t in tags if t.startswith(f"iou/{name}/")]
        assert per_class and all(t.split("/")[2] in domains.get_domain(name).class_names for t in per_class)
    assert [e.step for e in validation.Tensors("miou/mean")][-1] == 8  # 2 masked + 3 + 3 steps


def test_iou_tables_name_every_class(validation):
    for name in DOMAINS:
        tag = f"iou_table/{name}"
        assert _plugin(validation, tag) == "text"
        table = tf.make_ndarray(validation.Tensors(tag)[-1].tensor_proto).item().decode()
        assert f"**{name}**: mIoU" in table
        for class_name in domains.get_domain(name).class_names:
            assert f"| {class_name} |" in table


def test_confusion_images_per_domain(validation):
    for name, num_classes in DOMAINS.items():
        tag = f"confusion/{name}"
        assert _plugin(validation, tag) == "images"
        images = _images(validation, tag)
        assert sorted(images) == [5, 8]  # every validation
        (image,) = images[8]
        assert image.shape[0] == image.shape[1] and image.shape[0] % (num_classes + 1) == 0
        cell = image.shape[0] // (num_classes + 1)
        # The top row holds the class colours, in train-id order.
        top = image[cell // 2, cell::cell][:num_classes]
        np.testing.assert_array_equal(top, np.asarray(domains.get_domain(name).palette, np.uint8))


def test_panels_side_by_side_with_the_centroid_map_once_centroids_exist(validation):
    for name in DOMAINS:
        tag = f"panels/{name}"
        assert _plugin(validation, tag) == "images"
        images = _images(validation, tag)
        # The validation interval (checkpoint_every = 3), after the 2 masked steps.
        assert sorted(images) == [5, 8]
        # Step 5 ends pre-training: input | truth | prediction.
        assert len(images[5]) == 3 and images[5][0].shape == (HEIGHT, 3 * WIDTH, 3)
        # Step 8 is after the centroid stage: + nearest centroid.
        assert len(images[8]) == 3 and images[8][0].shape == (HEIGHT, 4 * WIDTH, 3)
        # The truth panel is painted with the palette (ignore = black).
        palette = {tuple(c) for c in domains.get_domain(name).palette} | {(0, 0, 0)}
        truth = images[8][0][:, WIDTH:2 * WIDTH].reshape(-1, 3)
        assert {tuple(p) for p in truth} <= palette


def test_the_masked_stage_shows_masked_input_reconstruction_and_input(validation, tiny_run):
    from usss_tf.data import masking
    from usss_tf.model.preprocessing import IMAGENET_MEAN

    settings = config_lib.load_config(tiny_run / "config.yaml").masked_modelling
    for name, scale in (("synth_city", 0.5), ("synth_camvid", 0.75)):
        tag = f"reconstruction/{name}"
        assert _plugin(validation, tag) == "images"
        images = _images(validation, tag)
        assert sorted(images) == [2]  # the masked stage's last step (2 < checkpoint_every)
        height, width = round(HEIGHT * scale), round(WIDTH * scale)
        for index, row in enumerate(images[2]):
            assert row.shape == (height, 3 * width, 3)
            seen, reconstruction, image = np.split(row.astype(int), 3, axis=1)
            mask = masking.patch_mask((height, width), settings.patch, settings.mask_ratio,
                                      [0, index]).numpy()[..., 0] == 1
            # Masked cells show the mean colour; visible ones the input.
            assert (np.abs(seen[mask] - np.round(IMAGENET_MEAN)) <= 1).all()
            np.testing.assert_array_equal(seen[~mask], image[~mask])
            assert not np.array_equal(reconstruction, image)


def test_train_scalars(tiny_run):
    train = _load(tiny_run / "tensorboard" / "train")
    tags = set(train.Tags()["tensors"])
    assert {"masked/loss", "masked/masked_reconstruction/synth_city", "pretrain/loss",
            "universal/loss", "universal/within_entropy/synth_city",
            "universal/cross_entropy/synth_camvid", "universal/masked_auxiliary/synth_city",
            "pretrain/cross_domain_supervision/synth_city", "universal/cross_domain_supervision/synth_camvid",
            "universal/images_per_second",
            "universal/learning_rate"} <= tags


def test_hparams_session_and_experiment(tiny_run):
    root = _load(tiny_run / "tensorboard")
    start_tag = hparams_metadata.SESSION_START_INFO_TAG
    assert _plugin(root, start_tag) == "hparams"
    content = root.SummaryMetadata(start_tag).plugin_data.content
    info = hparams_metadata.parse_session_start_info_plugin_data(content)
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
    assert values["method"] == "univ_full" and values["seed"] == 0
    assert values["synth_city.labeled"] == 4 and values["synth_camvid.labeled"] == 4
    assert values["model.backbone"] == "erfnet" and values["train.steps"] == 3
    assert values["loss.within_entropy"] == pytest.approx(0.1)
    assert values["train.precision"] == "float32"
    assert "train.verbose" not in values and "synth_city.root" not in values

    experiment = hparams_metadata.parse_experiment_plugin_data(
        root.SummaryMetadata(hparams_metadata.EXPERIMENT_TAG).plugin_data.content
    )
    metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
    assert {("validation", "miou/synth_city"), ("validation", "miou/synth_camvid"),
            ("validation", "miou/mean")} <= metrics
    assert {h.name for h in experiment.hparam_infos} == set(values)


def test_projector_lists_every_centroid(tiny_run):
    log_dir = tiny_run / "tensorboard"
    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.tensor_name == projector.TENSOR_NAME
    rows = (log_dir / embedding.metadata_path).read_text().splitlines()
    assert rows[0] == "domain\tclass\tcentroid"
    per_class = 2  # the tiny run's centroids_per_class
    assert len(rows) - 1 == sum(DOMAINS.values()) * per_class
    assert rows[1:3] == ["synth_city\troad\t0", "synth_city\troad\t1"]
    assert rows[-1] == f"synth_camvid\t{domains.get_domain('synth_camvid').class_names[-1]}\t1"

    # The checkpoint the projector finds holds the final model's centroids.
    matrix = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(log_dir))).get_tensor(projector.TENSOR_NAME)
    assert matrix.shape == (sum(DOMAINS.values()) * per_class, 8)
    loaded = runs.load_run(tiny_run)
    expected, _ = projector.centroid_table(loaded.model, loaded.domains)
    np.testing.assert_allclose(matrix, expected, atol=1e-6)


def test_hparam_values_are_flat_scalars():
    config = config_lib.config_from_dict({
        "method": "univ_basic",
        "domains": [{"name": "synth_camvid", "root": "/data/c", "labeled": 5, "unlabeled": None}],
    })
    values = monitoring.hparam_values(config)
    assert all(isinstance(v, (bool, int, float, str)) for v in values.values())
    assert values["synth_camvid.labeled"] == 5 and values["synth_camvid.unlabeled"] == "none"
    assert values["data.crop"] == "[128, 256]" and values["method"] == "univ_basic"
    assert values["domains"] == "synth_camvid"


@pytest.mark.parametrize("image_every, expected", [(None, [3, 6]), (2, [2, 4, 6]), (0, [])])
def test_panel_schedule(image_every, expected):
    config = config_lib.config_from_dict({
        "domains": [{"name": "synth_camvid", "root": "/data/c"}],
        "train": {"checkpoint_every": 3, "image_every": image_every},
    })
    monitor = monitoring.RunMonitor("/unused", [], config, writer=None)
    written = []
    monitor.write_panels = lambda model, global_step, with_centroids: written.append(global_step)
    for step in range(1, 7):
        monitor.on_step(None, step, 100 + step)
    assert written == [100 + s for s in expected]


@pytest.mark.parametrize("image_every, expected", [(None, [3, 6, 7]), (2, [2, 3, 4, 6, 7]),
                                                     (0, [3, 6, 7])])
def test_reconstruction_panel_schedule(image_every, expected):
    """The masked stage (7 steps) shows reconstructions where another stage would
    validate (checkpoint_every = 3), at its last step, and every image_every steps."""
    config = config_lib.config_from_dict({
        "domains": [{"name": "synth_camvid", "root": "/data/c"}],
        "train": {"checkpoint_every": 3, "image_every": image_every},
    })
    monitor = monitoring.RunMonitor("/unused", [], config, writer=None)
    written = []
    monitor.write_reconstruction_panels = lambda model, global_step: written.append(global_step)
    for step in range(1, 8):
        monitor.on_masked_step(None, step, 7, 100 + step)
    assert written == [100 + s for s in expected]


def test_panel_settings_are_validated():
    with pytest.raises(ConfigError, match="train.image_every"):
        config_lib.config_from_dict({"domains": [{"name": "synth_camvid", "root": "/c"}],
                                     "train": {"image_every": -1}})
    with pytest.raises(ConfigError, match="train.panel_images"):
        config_lib.config_from_dict({"domains": [{"name": "synth_camvid", "root": "/c"}],
                                     "train": {"panel_images": -2}})
    # They only change what is watched: a run may be resumed with other values.
    assert {"train.image_every", "train.panel_images"} <= config_lib.WATCH_ONLY_KEYS
