"""Shared fixtures. TensorFlow logging is quieted before any test imports it."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import copy
import fcntl
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image


def write_camvid_tree(root, num_train=8, num_val=3, size=(32, 64), num_classes=7, seed=0):
    """A tiny CamVid (SegNet) layout tree: images correlated with their labels."""
    from usss_tf.data import layouts

    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        for i in range(count):
            label = np.repeat(rng.integers(0, num_classes, (size[0] // 8, size[1] // 8)), 8, 0)
            label = np.repeat(label, 8, 1).astype(np.uint8)
            image = (label[..., None] * 30 + rng.integers(0, 40, (*size, 3))).astype(np.uint8)
            image_path, label_path = layouts.CAMVID.example_paths(root, split, f"frame{i:03d}")
            for path, array in ((image_path, image), (label_path, label)):
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)
    return root


@pytest.fixture
def camvid_tree(tmp_path):
    return write_camvid_tree(tmp_path / "camvid")


# A narrow, shallow ERFNet (4 of its 13 blocks: half a full-depth tiny run's time,
# most of it tracing); tests of the backbones themselves use every block.
TINY_RUN = {
    "name": "tiny_run",
    "method": "univ_full",
    "seed": 0,
    "model": {"width": 0.125, "depth": 0.25, "embedding_dim": 8, "centroids_per_class": 2},
    "data": {"crop": [32, 64], "batch_size": 2, "unlabeled_batch_size": 2, "eval_batch_size": 4},
    # Every stage and loss term of univ_full (its defaults leave the unlabelled-pixel terms off).
    "loss": {"within_entropy": 0.1, "cross_entropy": 0.1, "embedding_supervision": 1.0,
             "consistency_feature": 0.25, "consistency_paste": 0.25, "masked_auxiliary": 0.5,
             "cross_domain_supervision": 0.5},
    "train": {"masked_steps": 2, "pretrain_steps": 3, "steps": 3, "checkpoint_every": 3, "log_every": 1,
              "verbose": 0, "optimizer": "sgd", "learning_rate": 0.01},
}
# Each domain at its own scale, so every test of inference, evaluation, export
# and serving checks that the domain's scale is applied where it must be.
TINY_SCALES = {"synth_city": 0.5, "synth_camvid": 0.75}


def train_tiny_run(base, **changes):
    """Trains a tiny univ_full run on two synthetic domains (32x64 images); returns its run dir.

    synth_city is seen at scale 0.5 (16x32), synth_camvid at 0.75 (24x48).
    """
    from usss_tf import config as config_lib
    from usss_tf import train as train_lib
    from usss_tf.data import synthetic

    base = pathlib.Path(base)
    roots = synthetic.write_synthetic_domains(
        base / "data", ("synth_city", "synth_camvid"), num_train=8, num_val=3, size=(32, 64), seed=0
    )
    mapping = {**TINY_RUN, **changes}
    mapping["domains"] = [
        {"name": name, "root": str(root), "labeled": 4, "scale": TINY_SCALES[name]}
        for name, root in roots.items()
    ]
    config = config_lib.config_from_dict(mapping)
    run_dir = base / "run"
    train_lib.run_experiment(config, run_dir, echo=lambda *_: None)
    return run_dir


@pytest.fixture
def tiny_run_settings():
    """A copy of the tiny run's config mapping (no domains), for tests that add their own."""
    return copy.deepcopy(TINY_RUN)


@pytest.fixture
def train_tiny():
    """``train_tiny(base, **changes)``: trains a tiny run under ``base``; returns its run dir."""
    return train_tiny_run


def _shared_once(tmp_path_factory, name, build):
    """``build(folder)`` once per test session, not once per pytest-xdist worker.

    The first worker to ask builds ``folder`` under a file lock in the
    session's shared temporary folder; the others wait and reuse it. A
    marker file says it is complete (a worker that died mid-build leaves no
    marker, and the next one starts over).
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by every worker of this session
    folder = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = base / f"{name}.done"
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny run directory shared by the tests that need a trained model.

    Trained once per test session (``_shared_once``). Tests only read it
    (they copy it to change it).
    """
    return _shared_once(tmp_path_factory, "shared_tiny_run", train_tiny_run) / "run"


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory):
    """Version 1 of the tiny run in a model base ``usss/``, written by ``export.export_run``
    once per test session (exporting costs tens of seconds). Tests only read it; those that
    change a model base copy the version into their own."""
    from usss_tf import export

    def build(folder):
        model_base = folder / "usss"
        assert export.export_run(tiny_run, model_base=model_base) == model_base / "1"

    return _shared_once(tmp_path_factory, "shared_tiny_export", build) / "usss" / "1"


def _expected_seconds(item):
    """``@pytest.mark.slow(seconds=N)``'s N (a rough figure on 2 cores), 30 for a bare ``slow``, else 0."""
    marker = item.get_closest_marker("slow")
    return 0 if marker is None else marker.kwargs.get("seconds", 30)


def _worker_queues(items, workers):
    """``items`` cut into the ``workers`` slices pytest-xdist's ``worksteal`` first hands out
    (contiguous, equal in count), with the slow tests spread evenly by expected seconds
    (longest first to the least-loaded slice) and at each slice's front; the quick ones fill
    the rest in collection order, so a module's tests stay together (and its module-scoped
    fixtures are built once)."""
    sizes, left = [], len(items)
    for index in range(workers):
        sizes.append(left // (workers - index))
        left -= sizes[-1]
    queues, loads = [[] for _ in sizes], [0] * workers
    for item in sorted((i for i in items if _expected_seconds(i)), key=lambda i: -_expected_seconds(i)):
        target = min((q for q in range(workers) if len(queues[q]) < sizes[q]), key=lambda q: loads[q])
        queues[target].append(item)
        loads[target] += _expected_seconds(item)
    quick = iter(i for i in items if not _expected_seconds(i))
    for queue, size in zip(queues, sizes):
        queue.extend(next(quick) for _ in range(size - len(queue)))
    return queues


def _xdist_mode(config):
    """The ``--dist`` mode on the command line that started this pytest-xdist worker, else None."""
    argv = getattr(config, "workerinput", {}).get("mainargv", [])
    for index, arg in enumerate(argv):
        if arg == "--dist" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--dist="):
            return arg.split("=", 1)[1]
    return None


@pytest.hookimpl(trylast=True)  # after -k, -m and --deselect have removed tests
def pytest_collection_modifyitems(config, items):
    """Orders the tests so that pytest-xdist's workers end together.

    ``make test`` runs ``--dist worksteal``: each worker first gets one
    contiguous slice of the collection, equal in count, and a worker that
    runs dry steals the back half of the longest queue. So the slow tests
    are spread over the slices by expected seconds, each slice slowest
    first, and what is stolen from a queue's back is quick. Any other run
    gets the slowest first. Every worker computes the same order (xdist
    requires it).
    """
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers > 1 and _xdist_mode(config) == "worksteal":
        items[:] = [item for queue in _worker_queues(items, workers) for item in queue]
    else:
        items.sort(key=lambda item: -_expected_seconds(item))
