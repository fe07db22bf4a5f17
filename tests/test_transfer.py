"""Cross-label-space transfer: the correspondence tables and the metric on hand-built label maps."""

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
        assert set(ways) == {"decoder", "embedding"}
        for figures in ways.values():
            assert 0.0 <= figures["miou"] <= 1.0
            assert set(figures["per_class_iou"]) == set(transfer.correspondence(source, target).concept_names)
    assert "in synth_camvid's label space" in evaluate.format_report(results)
