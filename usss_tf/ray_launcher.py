"""``usss-tf train --ray-workers N``: the same training on a Ray cluster, through Ray Train.

Ray Train's ``TensorflowTrainer`` starts N worker processes (on a running Ray
cluster, or a local one), sets ``TF_CONFIG`` in each, and calls the training
function there; ``usss_tf.cluster`` takes it from there exactly as under a
Kubeflow TFJob: ``MultiWorkerMirroredStrategy``, the chief writes the run
directory (which must be on storage every node sees). Needs the ``ray``
extra: ``pip install 'usss-tf[ray]'``.
"""

import pathlib

from usss_tf.errors import ConfigError


def _ray():
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.tensorflow import TensorflowTrainer
    except ImportError:
        raise ConfigError("--ray-workers needs Ray Train; install it with pip install 'usss-tf[ray]'") from None
    return ray, RunConfig, ScalingConfig, TensorflowTrainer


def _train_worker(settings):
    """Runs on each Ray worker, with ``TF_CONFIG`` set by Ray Train."""
    import ray.train

    from usss_tf import cluster
    from usss_tf import config as config_lib
    from usss_tf import train as train_lib

    workers = cluster.cluster_from_environment()
    strategy = (cluster.multi_worker_strategy(workers, timeout_seconds=settings["timeout"])
                if workers is not None else None)
    config = config_lib.load_config(settings["config"], settings["overrides"])
    chief = workers is None or workers.is_chief
    results = train_lib.run_experiment(config, settings["run_dir"], strategy=strategy,
                                       echo=print if chief else (lambda *_: None))
    ray.train.report({f"miou/{domain}": r["miou"] for domain, r in results.items()})


def train_on_ray(config_path, overrides, run_dir, num_workers, worker_timeout=300.0, address=None,
                 cpus_per_worker=1):
    """Trains ``config_path`` on ``num_workers`` Ray workers; returns the run's figures per domain.

    ``address``: a running Ray cluster (``ray start --head``; default: Ray's
    own discovery, else a local cluster on this machine).
    """
    ray, RunConfig, ScalingConfig, TensorflowTrainer = _ray()
    from usss_tf import config as config_lib

    config_lib.load_config(config_path, overrides)  # Bad configs fail here, not on the workers.
    run_dir = pathlib.Path(run_dir).resolve()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    trainer = TensorflowTrainer(
        _train_worker,
        train_loop_config={"config": str(pathlib.Path(config_path).resolve()),
                           "overrides": list(overrides), "run_dir": str(run_dir),
                           "timeout": worker_timeout},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=False,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=f"usss-tf-{run_dir.name}",
                             storage_path=str(run_dir.parent / ".ray_results")),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    # The chief wrote the figures into the (shared) run directory.
    from usss_tf import run_dir as run_dir_lib

    return run_dir_lib.RunDir(run_dir).read_json(run_dir_lib.METRICS, {})
