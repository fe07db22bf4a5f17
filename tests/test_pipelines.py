"""Every committed config and grid loads and validates (no data needed)."""

import pathlib

import pytest

from usss_tf import config as config_lib
from usss_tf import study

PIPELINES = pathlib.Path(__file__).parent.parent / "pipelines"
CONFIGS = sorted(p for p in PIPELINES.rglob("*.yaml") if not p.name.startswith("study_"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(PIPELINES)))
def test_config_loads(path):
    config = config_lib.load_config(path)
    assert config.name == path.stem
    assert f"usss-tf train pipelines/{path.relative_to(PIPELINES)}" in path.read_text() \
        or path.name == "quickstart.yaml"


def test_paper_grid_is_complete():
    expected = {"cityscapes_camvid_n50", "cityscapes_camvid_n100", "cityscapes_camvid_n300",
                "idd_cityscapes_n100", "idd_cityscapes_n300", "cityscapes_sunrgbd_n100"}
    assert {p.stem for p in (PIPELINES / "paper").glob("*.yaml")} == expected
    n100 = config_lib.load_config(PIPELINES / "paper" / "cityscapes_camvid_n100.yaml")
    assert [d.labeled for d in n100.domains] == [100, 100]
    assert n100.train.pretrain_steps + n100.train.steps == 200 * 13
    for path in (PIPELINES / "paper").glob("*.yaml"):  # the paper's crops: none of our augmentations
        augment = config_lib.load_config(path).data.augment
        assert not (augment.photometric or augment.copy_paste or augment.class_hue), path.name


def test_synthetic_study_grid_loads(tmp_path):
    grid = study.load_grid(PIPELINES / "study_synthetic.yaml", out=tmp_path)
    assert len(list(grid.cells())) == 4 * 3 * 3
    config = grid.config("supervised", 5, 2)
    assert config.method == "supervised" and config.seed == 2
    assert [d.labeled for d in config.domains] == [5, 5]
