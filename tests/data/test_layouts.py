import pathlib

from usss_tf.data import layouts


def test_example_paths_in_each_layout():
    assert layouts.CITYSCAPES.example_paths("r", "val", "bonn", "bonn_000001_000019") == (
        pathlib.Path("r/leftImg8bit/val/bonn/bonn_000001_000019_leftImg8bit.png"),
        pathlib.Path("r/gtFine/val/bonn/bonn_000001_000019_gtFine_labelIds.png"),
    )
    assert layouts.IDD.example_paths("", "train", "0", "000123", "_leftImg8bit.jpg")[1] == (
        pathlib.Path("gtFine/train/0/000123_gtFine_labellevel3Ids.png"))
    assert layouts.CAMVID.example_paths("r", "test", "0001TP_006690") == (
        pathlib.Path("r/test/0001TP_006690.png"), pathlib.Path("r/testannot/0001TP_006690.png"))
    assert layouts.SUNRGBD.example_paths("r", "train", "img-000001", ".jpg") == (
        pathlib.Path("r/train/image/img-000001.jpg"), pathlib.Path("r/train/label37/img-000001.png"))
    assert layouts.SUNRGBD_LIST_FILE.format(split="test") == "test37.txt"


def test_every_domain_layout_is_defined():
    from usss_tf import domains

    names = domains.registered_domains()
    assert {"cityscapes", "camvid", "idd", "sunrgbd", "synth_city"} <= set(names)
    for name in names:
        assert domains.get_domain(name).layout in layouts.LAYOUTS, name
