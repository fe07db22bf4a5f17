"""The version store and the signature runner, in process, on a real export of the tiny run."""

import concurrent.futures

import grpc
import numpy as np
import pytest

from usss_tf.serving import models
from usss_tf.serving.status import RequestError

from .conftest import MODEL, add_version


@pytest.fixture
def model_base(exported, tmp_path):
    base = tmp_path / MODEL
    base.mkdir()
    add_version(base, exported, 1)
    return base


@pytest.fixture
def loads(monkeypatch):
    """Counts ``LoadedVersion.load`` calls (the real load still runs)."""
    calls = []
    real = models.LoadedVersion.load.__func__

    def counted(cls, version, path):
        calls.append(version)
        return real(cls, version, path)

    monkeypatch.setattr(models.LoadedVersion, "load", classmethod(counted))
    return calls


@pytest.mark.slow
def test_latest_policy_pinned_versions_and_a_broken_one(model_base, exported, loads):
    store = models.ModelStore(model_base, MODEL, poll_seconds=3600)
    store.refresh()
    assert store.get(MODEL).version == 1 and loads == [1]
    with pytest.raises(RequestError) as raised:
        store.get("other")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND and "'other' not found" in raised.value.message

    add_version(model_base, exported, 2)
    (model_base / "3").mkdir()
    (model_base / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
    assert store.refresh() == 2  # 3 fails to load; 2 becomes the latest.
    assert store.get(MODEL).version == 2 and loads == [1, 3, 2]
    assert store.get(MODEL, 1).version == 1  # Pinned: loaded again on request.
    for _ in range(3):
        with pytest.raises(RequestError, match="no version 3 .*cannot load"):
            store.get(MODEL, 3)
    assert loads == [1, 3, 2, 1]  # The broken version is not retried while unchanged.
    assert [v for v, error in store.statuses()] == [3, 2, 1]
    with pytest.raises(RequestError, match=r"no version 9 \(versions on disk: 1, 2, 3\)"):
        store.get(MODEL, 9)


def test_runner_checks_inputs_before_running(model_base, scene_pngs):
    store = models.ModelStore(model_base, MODEL, poll_seconds=3600)
    store.refresh()
    runner = store.get(MODEL).runner("", MODEL)
    assert runner.name == "serving_default" and runner.input_names == ["images"]
    with pytest.raises(RequestError, match="expected dtype DT_STRING, got DT_UINT8"):
        runner.run({"images": np.zeros((1, 8, 8, 3), np.uint8)})
    with pytest.raises(RequestError, match="output_filter names unknown output"):
        runner.run({"images": np.array(scene_pngs[:1], dtype=object)}, ["logits"])
    outputs = runner.run({"images": np.array(scene_pngs[:1], dtype=object)}, ["class_ids"])
    assert list(outputs) == ["class_ids"] and outputs["class_ids"].shape == (1, 32, 64)
    with pytest.raises(RequestError, match="has no signature 'segment_mars'"):
        store.get(MODEL).runner("segment_mars", MODEL)


@pytest.mark.slow
def test_a_storm_of_pinned_requests_loads_each_version_once_and_keeps_few(model_base, exported, loads):
    for version in (2, 3):
        add_version(model_base, exported, version)
    store = models.ModelStore(model_base, MODEL, poll_seconds=3600, max_pinned=1)
    store.refresh()
    assert loads == [3]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: store.get(MODEL, 1).version, range(16)))
    assert got == [1] * 16 and loads == [3, 1]  # One load for sixteen concurrent requests.
    assert store.get(MODEL, 2).version == 2 and loads == [3, 1, 2]
    # The latest plus one pinned version: 1 (least recently used) was unloaded.
    assert [v for v, error in store.statuses()] == [3, 2]
    assert store.get(MODEL).version == 3
