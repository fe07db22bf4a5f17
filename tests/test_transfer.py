"""Cross-label-space transfer: the correspondence tables and the metric on hand-built label maps."""

import json

import numpy as np
import pytest

from usss_tf import metrics, transfer
from usss_tf.domains import IGNORE_LABEL, get_domain


def _ids(domain, *names):
    classes = get_domain(domain).class_names
    return [classes.index(n) for n in names]


def test_every_table_names_real_classes_and_reads_both_ways():
    for table in transfer.CORRESPONDENCES:
        back = transfer.correspondence(table.target, table.source)
        assert back.concept_names == table.concept_names
        assert transfer.correspondence(table.source, table.target) == table
    assert transfer.correspondence("synth_city", "sunrgbd") is None
    with pytest.raises(ValueError, match="synth_camvid has no class 'car'"):
        transfer.Correspondence("synth_city", "synth_camvid", (("car", ("car",), ("car",)),))
    with pytest.raises(ValueError, match="in two concepts"):
        transfer.Correspondence("synth_city", "synth_camvid",
                                (("a", ("car",), ("vehicle",)), ("b", ("truck", "car"), ("road",))))


def test_label_sets_admit_the_target_classes_of_each_source_label():
    sets = transfer.correspondence("synth_camvid", "synth_city").label_sets()
    camvid, city = get_domain("synth_camvid").class_names, get_domain("synth_city").class_names
    assert sets.shape == (len(camvid) + 1, len(city))
    admitted = {camvid[y]: {city[c] for c in np.flatnonzero(row)} for y, row in enumerate(sets[:-1])}
    assert admitted == {"sky": {"sky"}, "building": {"building"}, "road": {"road"},
                        "pavement": {"sidewalk"}, "tree": {"vegetation"},
                        "vehicle": {"car", "truck"}, "pedestrian": {"person"}}
    assert not sets[-1].any()  # ignore
    back = transfer.correspondence("synth_city", "synth_camvid").label_sets()
    assert not back[_ids("synth_city", "fence", "pole")].any()  # no counterpart: not counted
    assert back[_ids("synth_city", "truck")[0], _ids("synth_camvid", "vehicle")[0]] == 1
    pairs = transfer.label_sets(["synth_city", "synth_camvid", "sunrgbd"])
    assert sorted(pairs) == [("synth_camvid", "synth_city"), ("synth_city", "synth_camvid")]
    assert transfer.label_sets(["synth_city", "sunrgbd"]) == {}


def test_corresponding_targets_are_the_other_domains_with_a_table():
    domains = ["synth_city", "synth_camvid", "sunrgbd"]
    assert transfer.corresponding_targets(["synth_city"], domains) == {"synth_camvid"}
    assert transfer.corresponding_targets(domains, domains) == {"synth_city", "synth_camvid"}
    assert transfer.corresponding_targets(["sunrgbd"], domains) == set()


def test_transfer_miou_on_a_hand_built_pair():
    """synth_city truth, synth_camvid predictions: car and truck are both 'vehicle',
    fence has no counterpart (ignored), a wrong concept costs both concepts' IoU."""
    table = transfer.correspondence("synth_city", "synth_camvid")
    road, car, truck, fence, sky = _ids("synth_city", "road", "car", "truck", "fence", "sky")
    c_road, vehicle, c_sky = _ids("synth_camvid", "road", "vehicle", "sky")
    labels = np.array([[road, road, car, truck, fence, IGNORE_LABEL, sky, sky]])
    predicted = np.array([[c_road, c_road, vehicle, vehicle, c_sky, c_sky, c_sky, c_road]])
    confusion = transfer.concept_confusion(table, labels, predicted)
    figures = metrics.summarize(confusion, table.concept_names)
    iou = figures["per_class_iou"]
    # road: 2 right, 1 false positive (a sky pixel) -> 2/3; vehicle 2/2; sky: 1 right, 1 missed -> 1/2.
    assert iou["road"] == pytest.approx(2 / 3) and iou["vehicle"] == 1.0 and iou["sky"] == 0.5
    assert iou["building"] is None  # Neither in the truth nor predicted.
    assert figures["miou"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert figures["pixel_accuracy"] == pytest.approx(5 / 6)  # fence and ignore do not count


def test_a_target_class_without_counterpart_is_an_error_not_ignored():
    table = transfer.correspondence("cityscapes", "idd")
    (road,) = _ids("cityscapes", "road")
    curb, idd_road = _ids("idd", "curb", "road")  # IDD's curb has no Cityscapes class.
    confusion = transfer.concept_confusion(table, np.array([road, road]), np.array([idd_road, curb]))
    figures = metrics.summarize(confusion, table.concept_names)
    assert figures["per_class_iou"]["road"] == 0.5 and figures["pixel_accuracy"] == 0.5
    assert "curb" not in figures["per_class_iou"]


def test_evaluate_reports_transfer_both_ways_for_a_univ_full_run(tiny_run):
    from usss_tf import evaluate

    results = evaluate.evaluate_run(tiny_run)
    for source, target in (("synth_city", "synth_camvid"), ("synth_camvid", "synth_city")):
        ways = results[source]["transfer"][target]
        assert set(ways) == {"decoder", "embedding", "decoder_colour_matched"}
        for figures in ways.values():
            assert 0.0 <= figures["miou"] <= 1.0
            assert set(figures["per_class_iou"]) == set(transfer.correspondence(source, target).concept_names)
    assert "in synth_camvid's label space" in evaluate.format_report(results)
    # Training scored the final model the same way, on the same images and colours.
    trained = json.loads((tiny_run / "metrics.json").read_text())
    for source in ("synth_city", "synth_camvid"):
        for target, ways in results[source]["transfer"].items():
            for way, figures in ways.items():
                assert trained[source]["transfer"][target][way]["miou"] == pytest.approx(figures["miou"], abs=1e-9)


def test_the_colour_matched_way_is_the_decoder_on_images_matched_by_hand(tiny_run):
    """Each image moved from its own channel mean and std (all its pixels) to the
    reference's, clipped and rounded, then the target's decoder: as the plain way reads it."""
    from usss_tf import runs

    model = runs.load_run(tiny_run).model
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (2, 32, 64, 3)).astype(np.uint8)
    images[1] //= 3  # a darker image: its own moments, not the batch's
    reference = (np.array([90.0, 120.0, 60.0]), np.array([30.0, 20.0, 45.0]))
    mean, std = images.mean((1, 2), keepdims=True), images.std((1, 2), keepdims=True)
    by_hand = np.round(np.clip((images - mean) / std * reference[1] + reference[0], 0, 255)).astype(np.uint8)
    plain = transfer.TransferPredictor(model, "synth_city", "synth_camvid")
    matched = transfer.TransferPredictor(model, "synth_city", "synth_camvid", reference_moments=reference)
    ids = matched.class_ids(images, (32, 64))
    assert set(ids) == {"decoder", "decoder_colour_matched"}
    np.testing.assert_array_equal(ids["decoder"], plain.class_ids(images, (32, 64))["decoder"])
    np.testing.assert_array_equal(ids["decoder_colour_matched"], plain.class_ids(by_hand, (32, 64))["decoder"])


def test_a_domain_whose_labelled_images_are_gone_loses_only_its_colour_matched_figures(tiny_run):
    """A missing labelled image or data folder: a note naming the domain, no figure, nothing generated."""
    from usss_tf import evaluate, runs
    from usss_tf.run_dir import MANIFEST, RunDir

    config = runs.read_config(tiny_run)
    manifest = RunDir(tiny_run, writable=False).read_json(MANIFEST, {})
    names = {"synth_city", "synth_camvid"}
    assert set(evaluate.labelled_colour_moments(config, manifest, names)) == names
    manifest["synth_city"]["labeled"] = manifest["synth_city"]["labeled"] + ["no_such_image"]
    manifest["synth_camvid"]["root"] = str(tiny_run / "no_such_folder")
    notes = []
    assert evaluate.labelled_colour_moments(config, manifest, names, echo=notes.append) == {}
    assert len(notes) == 2
    assert "domain 'synth_city'" in notes[0] and "1 of its labelled images are gone" in notes[0]
    assert "domain 'synth_camvid'" in notes[1] and "no_such_folder) is not there" in notes[1]
    assert not (tiny_run / "no_such_folder").exists()  # nothing written for it


def test_a_changed_training_split_is_warned_about_and_the_reference_still_read(tiny_run):
    from usss_tf import evaluate, runs
    from usss_tf.run_dir import MANIFEST, RunDir

    config = runs.read_config(tiny_run)
    manifest = RunDir(tiny_run, writable=False).read_json(MANIFEST, {})
    split = config.domains[0].train_split
    assert manifest["synth_city"]["splits"][split]  # the run recorded its fingerprint
    manifest["synth_city"]["splits"][split] = {**manifest["synth_city"]["splits"][split], "sha256": "0" * 64}
    notes = []
    moments = evaluate.labelled_colour_moments(config, manifest, {"synth_city"}, echo=notes.append)
    assert set(moments) == {"synth_city"}
    assert len(notes) == 1 and notes[0].startswith("warning: domain 'synth_city'") and "not the one the run saw" in notes[0]
