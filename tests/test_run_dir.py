import json

import pytest

from usss_tf import method
from usss_tf import run_dir as run_dir_lib
from usss_tf.run_dir import RunDir, staged_folder, write_json_atomic


def test_json_is_written_whole_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "figures.json"
    write_json_atomic(path, {"miou": 0.5})
    write_json_atomic(path, {"miou": 0.75})
    assert json.loads(path.read_text()) == {"miou": 0.75}
    assert [p.name for p in tmp_path.iterdir()] == ["figures.json"]


def test_staged_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "models" / "1"
    with staged_folder(target) as staging:
        assert not staging.exists() and staging.name.startswith(".tmp-1-")
        staging.mkdir()
        (staging / "saved_model.pb").write_text("x")
        assert not target.exists()
    assert (target / "saved_model.pb").read_text() == "x"

    failed = tmp_path / "models" / "2"
    with pytest.raises(RuntimeError, match="disk full"):
        with staged_folder(failed) as staging:
            staging.mkdir()
            raise RuntimeError("disk full")
    with pytest.raises(FileExistsError):
        with staged_folder(target) as staging:
            staging.mkdir()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["1"]


def test_stage_state_and_the_one_answer_to_has_centroids(tmp_path):
    run = RunDir(tmp_path / "run").create()
    assert run.stages_done() == {} and not run.finished() and not run.has_label_centroids()
    run.mark_done(method.PRETRAIN, steps=3)
    run.mark_done(method.CENTROIDS, seconds=0.5)
    assert list(run.stages_done()) == ["pretrain", "centroids"]
    assert run.stages_done()["pretrain"]["steps"] == 3
    assert run.has_label_centroids()
    assert not run.finished()
    run.write_json(run_dir_lib.METRICS, {"a": {"miou": 0.1}})
    assert run.finished()
    assert run.checkpoints("universal") == tmp_path / "run" / "checkpoints" / "universal"
    assert run.supervised("synth_city").path == tmp_path / "run" / "supervised" / "synth_city"
    assert run.latest_checkpoint("universal") is None


def _config(settings, tmp_path):
    from usss_tf import config as config_lib
    return config_lib.config_from_dict({**settings, "domains": [
        {"name": "synth_city", "root": str(tmp_path / "data"), "labeled": 2}]})


def test_a_run_directory_is_resumed_only_with_the_config_it_was_written_with(tmp_path, tiny_run_settings):
    import yaml
    from usss_tf.errors import ConfigError

    config = _config(tiny_run_settings, tmp_path)
    run = RunDir(tmp_path / "run").create()
    run.save_config(config)
    run.save_config(config)  # the same config resumes
    changed = _config({**tiny_run_settings, "seed": 7}, tmp_path)
    with pytest.raises(ConfigError, match="different config .changed: seed"):
        run.save_config(changed)
    logging_only = _config({**tiny_run_settings, "train": {**tiny_run_settings["train"], "log_every": 3}},
                           tmp_path)
    run.save_config(logging_only)

    # config.yaml written before a key existed: its value in that run is unknown.
    written = yaml.safe_load(run.config_path.read_text())
    del written["loss"]["consistency_paste"]
    del written["train"]["verbose"]  # logging keys may be missing
    run.config_path.write_text(yaml.safe_dump(written, sort_keys=False))
    with pytest.raises(ConfigError, match=r"config.yaml: .*older usss-tf, without the keys loss.consistency_paste;"):
        run.save_config(config)

    # A key added later with the earlier versions' behaviour as its default resumes at that value only.
    def with_auxiliary(weight, **sections):
        return _config({**tiny_run_settings, "loss": {**tiny_run_settings["loss"], "masked_auxiliary": weight},
                        **sections}, tmp_path)

    def rewrite(written):
        run.config_path.write_text(yaml.safe_dump(written, sort_keys=False))

    written["loss"]["consistency_paste"] = tiny_run_settings["loss"]["consistency_paste"]
    del written["loss"]["masked_auxiliary"], written["masked_modelling"]["augment"]
    rewrite(written)
    run.save_config(with_auxiliary(0.0))
    written = yaml.safe_load(run.config_path.read_text())
    assert written["loss"]["masked_auxiliary"] == 0.0  # recorded from now on
    del written["loss"]["masked_auxiliary"]
    rewrite(written)
    with pytest.raises(ConfigError, match=r"changed: loss.masked_auxiliary \(the run: 0.0, now: 0.5\)"):
        run.save_config(with_auxiliary(0.5))
    written["loss"]["masked_auxiliary"] = 0.0
    del written["masked_modelling"]["augment"]
    rewrite(written)
    with pytest.raises(ConfigError, match="changed: masked_modelling.augment .the run: 'training', now: 'flips'"):
        run.save_config(with_auxiliary(0.0, masked_modelling={"augment": "flips"}))

    # univ_full's default for a key added since differs from what the older run did:
    # the run's value (0) is named, and resuming with it works.
    written = yaml.safe_load(run.config_path.read_text())
    del written["loss"]["cross_domain_supervision"]
    rewrite(written)
    loss = {k: v for k, v in tiny_run_settings["loss"].items() if k != "cross_domain_supervision"}
    default = _config({**tiny_run_settings, "loss": {**loss, "masked_auxiliary": 0.0}}, tmp_path)
    assert default.loss.cross_domain_supervision == 1.0
    with pytest.raises(ConfigError, match=r"changed: loss.cross_domain_supervision \(the run: 0.0, now: 1.0\)"):
        run.save_config(default)
    assert run.saved_config().loss.cross_domain_supervision == 0.0  # what the run did
    run.save_config(_config({**tiny_run_settings, "loss": {**loss, "masked_auxiliary": 0.0,
                                                           "cross_domain_supervision": 0.0}}, tmp_path))

    # Written before data.augment.class_hue: those runs did not turn hues, and say so.
    written = yaml.safe_load(run.config_path.read_text())
    for key in ("class_hue", "class_hue_max_concentration", "class_hue_probability"):
        del written["data"]["augment"][key]
    rewrite(written)
    assert not run.saved_config().data.augment.class_hue
    with pytest.raises(ConfigError, match=r"changed: data.augment.class_hue \(the run: False, now: True\)"):
        run.save_config(_config({**tiny_run_settings, "loss": {**loss, "masked_auxiliary": 0.0,
                                                               "cross_domain_supervision": 0.0}}, tmp_path))
