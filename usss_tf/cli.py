"""The ``usss-tf`` command line: a thin layer over the library.

Errors from bad input (``UsssError``) are printed on one line and exit with
status 2; nothing else is caught. TensorFlow's start-up chatter (oneDNN,
CUDA probing, AutoGraph notes) is kept off the terminal unless ``--verbose``:
a user sees the project's own lines.
"""

import functools
import os
import pathlib
import sys
import tempfile
import time

import click

from usss_tf.errors import ConfigError, UsssError
from usss_tf.serving import contract


_VERBOSE = False


def _import_tensorflow():
    """Imports TensorFlow and probes its devices with native stderr captured (unless --verbose).

    TensorFlow's C++ runtime logs at start-up before ``TF_CPP_MIN_LOG_LEVEL``
    takes effect ("oneDNN custom operations are on", "Could not find cuda
    drivers", "failed call to cuInit"). What it writes is kept and replayed
    only if the import fails.
    """
    if _VERBOSE or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            tf.get_logger().setLevel("ERROR")
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _friendly_errors(command):
    """Runs a command after a quiet TensorFlow import; bad input ends as one line, status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            _import_tensorflow()
            return command(*args, **kwargs)
        except UsssError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)

    return wrapper


def _parse_size(text):
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HEIGHTxWIDTH, e.g. 128x256, got {text!r}")
    if height < 8 or width < 8:
        raise click.BadParameter(f"size must be at least 8x8, got {text!r}")
    return height, width


def _parse_devices(text):
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    return [d.strip() for d in text.split(",") if d.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="usss-tf")
@click.option("-v", "--verbose", is_flag=True,
              help="Show TensorFlow's own start-up and runtime logs too.")
def main(verbose):
    """Universal semi-supervised semantic segmentation on TensorFlow."""
    global _VERBOSE
    _VERBOSE = verbose
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@main.command()
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.steps=200 --set domains.0.root=/data/cs.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/<config name>). Re-running resumes it.")
@click.option("--devices", default=None, metavar="N|DEV,...",
              help="Devices for MirroredStrategy: a count or names like GPU:0,GPU:1 (default: all GPUs, else the CPU).")
@click.option("--tensorboard", "with_tensorboard", is_flag=True,
              help="Serve TensorBoard on the run (loopback) while it trains, and after it until Ctrl-C.")
@click.option("--ray-workers", default=None, type=click.IntRange(min=1),
              help="Train on this many Ray Train workers (a local Ray cluster unless RAY_ADDRESS is set); "
                   "needs the 'ray' extra.")
@click.option("--worker-timeout", default=300.0, show_default=True, type=click.FloatRange(min=1),
              help="With TF_CONFIG (several workers): seconds a step, a barrier or connecting may take "
                   "before this worker ends with an error naming the unreachable peers.")
@click.option("--tensorboard-port", default=6006, show_default=True, type=click.IntRange(0, 65535),
              help="Port for --tensorboard (0: any free port).")
@_friendly_errors
def train(config_path, overrides, run_dir, devices, with_tensorboard, tensorboard_port, ray_workers,
          worker_timeout):
    """Train (or resume) the experiment described by CONFIG.yaml.

    With TF_CONFIG naming several workers (TFJob, Vertex AI, Ray Train), every
    worker runs this same command under MultiWorkerMirroredStrategy; the
    chief writes the run directory (which must be shared storage).
    """
    from usss_tf import cluster
    from usss_tf import config as config_lib

    if ray_workers is not None:
        from usss_tf import ray_launcher
        from usss_tf.train import format_results as train_lib_format

        config = config_lib.load_config(config_path, overrides)
        target = run_dir or pathlib.Path("runs") / config.name
        results = ray_launcher.train_on_ray(config_path, overrides, target, ray_workers,
                                            worker_timeout=worker_timeout)
        click.echo(train_lib_format(results))
        click.echo(f"run directory: {target}")
        return
    workers = cluster.cluster_from_environment()
    strategy = None
    if workers is not None:
        if devices:
            raise ConfigError("--devices: not with a TF_CONFIG cluster (each worker uses its own devices)")
        # Before any other TensorFlow op, as MultiWorkerMirroredStrategy requires.
        strategy = cluster.multi_worker_strategy(workers, timeout_seconds=worker_timeout)
    config = config_lib.load_config(config_path, overrides)
    from usss_tf import train as train_lib

    run_dir = pathlib.Path(run_dir or pathlib.Path("runs") / config.name)
    if with_tensorboard and (workers is None or workers.is_chief):
        from usss_tf import board

        run_dir.mkdir(parents=True, exist_ok=True)
        click.echo(f"TensorBoard at {board.launch(run_dir, port=tensorboard_port)}")
    results = train_lib.run_experiment(config, run_dir, devices=_parse_devices(devices), echo=click.echo,
                                       strategy=strategy)
    click.echo(train_lib.format_results(results))
    click.echo(f"run directory: {run_dir}")
    if with_tensorboard and (workers is None or workers.is_chief):
        click.echo("training finished; TensorBoard keeps serving until Ctrl-C")
        board.serve_forever()


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--port", default=6006, show_default=True, type=click.IntRange(0, 65535),
              help="Port to serve on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; loopback keeps the run's images off the network.")
@_friendly_errors
def board(run_dir, port, host):
    """Serve TensorBoard on RUN_DIR (a run, or a folder of runs to compare) until Ctrl-C."""
    from usss_tf import board as board_lib

    url = board_lib.launch(run_dir, port=port, host=host)
    click.echo(f"TensorBoard at {url} (logdir {run_dir}); Ctrl-C to stop")
    board_lib.serve_forever()


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--split", default="val", show_default=True,
              help="val, train, or a split folder name of the dataset.")
@click.option("--domain", "domains", multiple=True, help="Evaluate only this domain (repeatable).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the figures (and confusion matrices) to this JSON file.")
@click.option("--predictions", type=click.Path(file_okay=False), default=None,
              help="Write predictions here: <domain>/ids (raw label ids) and <domain>/color.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per batch (default data.eval_batch_size); only same-size images share one.")
@click.option("--saved-model", type=click.Path(file_okay=False), default=None,
              help="Score this export (a version folder, e.g. saved_models/usss/1) instead of the "
                   "run's checkpoint, on the run's data.")
@_friendly_errors
def evaluate(run_dir, split, domains, json_path, predictions, batch_size, saved_model):
    """Evaluate a trained run on every image of a split: mIoU, per-class IoU, pixel accuracy."""
    from usss_tf import evaluate as evaluate_lib

    results = evaluate_lib.evaluate_run(
        run_dir, split=split, domains=domains, batch_size=batch_size,
        predictions_dir=predictions, echo=click.echo, saved_model=saved_model,
    )
    click.echo(evaluate_lib.format_report(results))
    if json_path:
        evaluate_lib.write_results(results, json_path)
        click.echo(f"figures written to {json_path}")


@main.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--model-base", default=contract.DEFAULT_MODEL_BASE, show_default=True,
              type=click.Path(file_okay=False), help="TF Serving model base path.")
@click.option("--version", type=click.IntRange(min=1), default=None,
              help="Version folder to write (default: the next integer); never overwritten.")
@click.option("--max-image-pixels", type=click.IntRange(min=1), default=contract.MAX_IMAGE_PIXELS,
              show_default=True, help="Largest image (height x width) the signatures accept.")
@click.option("--max-request-pixels", type=click.IntRange(min=1), default=contract.MAX_REQUEST_PIXELS,
              show_default=True, help="Most pixels of all images in one request.")
@_friendly_errors
def export_command(run_dir, model_base, version, max_image_pixels, max_request_pixels):
    """Export a run's final model as a TF Serving SavedModel; prints the version folder."""
    from usss_tf import export as export_lib

    path = export_lib.export_run(
        run_dir, model_base=model_base, version=version, echo=lambda m: click.echo(m, err=True),
        max_image_pixels=max_image_pixels, max_request_pixels=max_request_pixels,
    )
    click.echo(str(path))


@main.command()
@click.argument("grid_path", metavar="GRID.yaml", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Study folder (default: the grid's 'out', else runs/<grid name>).")
@click.option("--devices", default=None, metavar="N|DEV,...", help="As for train.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes running cells side by side.")
@click.option("--shard", default=None, hidden=True, help="i/n: run every n-th cell from i (workers).")
@click.option("--re-evaluate", is_flag=True,
              help="Score the finished cells again with today's evaluate (their wall times kept).")
@_friendly_errors
def study(grid_path, out, devices, jobs, shard, re_evaluate):
    """Run methods x N x seeds of GRID.yaml (resumable); write results.csv/.md/.png."""
    from usss_tf import study as study_lib

    grid = study_lib.load_grid(grid_path, out=out)
    cells = len(list(grid.cells()))
    click.echo(f"study {grid.name}: {cells} runs in {grid.out}")
    started = time.perf_counter()
    shard = tuple(int(v) for v in shard.split("/")) if shard else None
    rows = study_lib.run_study(grid, devices=_parse_devices(devices), echo=click.echo, jobs=jobs,
                               shard=shard, grid_path=grid_path, re_evaluate=re_evaluate)
    if shard:
        return
    click.echo(study_lib.format_markdown(grid, rows))
    click.echo(f"{len(rows)} result rows in {grid.out / 'results.csv'} "
               f"({time.perf_counter() - started:.0f}s this invocation)")


@main.group()
def data():
    """Dataset utilities."""


@data.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--domains", default=None, help="Comma-separated synthetic domains (default: all).")
@click.option("--train", "num_train", default=60, show_default=True, type=click.IntRange(min=1))
@click.option("--val", "num_val", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default="128x256", show_default=True, help="Image size HEIGHTxWIDTH.")
@click.option("--seed", default=0, show_default=True, type=int)
@_friendly_errors
def synth(out_dir, domains, num_train, num_val, size, seed):
    """Write the built-in synthetic domains into OUT_DIR/<domain>/ in their real layouts."""
    from usss_tf.data import synthetic

    names = tuple(d.strip() for d in domains.split(",")) if domains else synthetic.SYNTHETIC_DOMAINS
    roots = synthetic.write_synthetic_domains(
        out_dir, names, num_train=num_train, num_val=num_val, size=_parse_size(size), seed=seed
    )
    for name, root in roots.items():
        click.echo(f"{name}: {root}")


@main.group()
def weights():
    """Pretrained encoder weights: convert official checkpoints, save a run's encoder."""


@weights.command("convert")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--backbone", required=True, help="Backbone the file is for, e.g. drn_d_38.")
@click.option("--width", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Channel multiplier (the official checkpoints are width 1).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="DST.weights.h5")
@_friendly_errors
def weights_convert(source, backbone, width, out):
    """Convert SOURCE (an official DRN .pth; no PyTorch needed) to a Keras .weights.h5."""
    from usss_tf.model.backbones import convert_weights

    count = convert_weights(source, backbone, out, width=width)
    click.echo(f"{out}: {backbone}, {count:,} parameters (use as model.backbone_weights)")


@weights.command("encoder")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="DST.weights.h5")
@_friendly_errors
def weights_encoder(run_dir, out):
    """Save RUN_DIR's trained shared encoder, to start another experiment from it."""
    from usss_tf.runs import save_encoder

    backbone = save_encoder(run_dir, out)
    click.echo(f"{out}: {backbone} encoder of {run_dir} (use as model.backbone_weights)")


@main.command("domains")
def list_domains():
    """List the registered domains and their label spaces."""
    from usss_tf import domains as registry

    for name in registry.registered_domains():
        domain = registry.get_domain(name)
        click.echo(f"{name:<14} {domain.layout:<11} {domain.num_classes:>3} classes: "
                   f"{', '.join(domain.class_names)}")


def _log_serving_events():
    """Version loads and request failures of the embedded server go to stderr with a timestamp."""
    import logging

    logger = logging.getLogger("usss_tf.serving")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@main.command()
@click.option("--model-base", default=None, type=click.Path(file_okay=False),
              help=f"Folder of integer version folders (TF Serving's base path) [default: "
                   f"{contract.DEFAULT_MODEL_BASE}].")
@click.option("--model-name", default=contract.DEFAULT_MODEL_NAME, show_default=True, help="Name clients ask for (model_spec.name).")
@click.option("--port", default=contract.DEFAULT_GRPC_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="gRPC port (0: any free port).")
@click.option("--rest-port", default=contract.DEFAULT_REST_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="REST port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; the server has no authentication, so loopback by default.")
@click.option("--max-message-mb", default=64.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest request or reply; gRPC answers bigger ones RESOURCE_EXHAUSTED, REST 413.")
@click.option("--poll-seconds", default=2.0, show_default=True, type=click.FloatRange(min=0.1),
              help="How often to look for a new version folder.")
@click.option("--max-inflight", default=4, show_default=True, type=click.IntRange(min=1),
              help="Predict requests running at once (gRPC and REST together).")
@click.option("--max-queued", default=16, show_default=True, type=click.IntRange(min=0),
              help="Predict requests waiting for a slot; beyond, RESOURCE_EXHAUSTED (REST 429).")
@click.option("--monitoring", is_flag=True,
              help="Serve Prometheus metrics at /monitoring/prometheus/metrics on the REST port.")
@click.option("--grace-seconds", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="On SIGTERM/SIGINT, how long requests in flight may take to finish.")
@click.option("--model-config-file", default=None, type=click.Path(dir_okay=False),
              help="TF Serving's ModelServerConfig text file: several models, version policies, "
                   "labels (instead of --model-base/--model-name).")
@click.option("--model-config-poll-seconds", default=0.0, show_default=True,
              type=click.FloatRange(min=0), help="Re-read --model-config-file when it changes, this "
                                                  "often (0: never; TF Serving's poll wait).")
@click.option("--mount", "mounts", multiple=True, metavar="CONTAINER=LOCAL",
              help="Read a config base_path under CONTAINER from LOCAL, as `docker run -v "
                   "LOCAL:CONTAINER` does for TF Serving, e.g. --mount /models=saved_models.")
@_friendly_errors
def serve(model_base, model_name, port, rest_port, host, max_message_mb, poll_seconds, max_inflight,
          max_queued, monitoring, grace_seconds, model_config_file, model_config_poll_seconds, mounts):
    """Serve exported versions over TF Serving's gRPC and REST APIs until SIGTERM/SIGINT."""
    from usss_tf.errors import ServingError

    if model_config_file is not None and model_base is not None:
        raise ServingError("--model-base and --model-config-file exclude each other (as in TF "
                           "Serving): list the model in the config file")
    mapping = {}
    for mount in mounts:
        container, sep, local = mount.partition("=")
        if not sep or not container.startswith("/") or not local:
            raise ServingError(f"--mount {mount!r}: expected CONTAINER=LOCAL with an absolute "
                               "CONTAINER path, e.g. /models=saved_models")
        mapping[container] = local
    if model_config_file is None:
        model_base = model_base or contract.DEFAULT_MODEL_BASE
        if not pathlib.Path(model_base).is_dir():
            raise ServingError(f"{model_base}: no such folder; export a run first: "
                               f"usss-tf export RUN_DIR --model-base {model_base}")
    _log_serving_events()
    from usss_tf.serving.server import ModelServer, serve as serve_until_signalled

    server = ModelServer(model_base, model_name=model_name, host=host, port=port, rest_port=rest_port,
                         max_message_mb=max_message_mb, poll_seconds=poll_seconds,
                         max_inflight=max_inflight, max_queued=max_queued, monitoring=monitoring,
                         model_config_file=model_config_file, mounts=mapping,
                         config_poll_seconds=model_config_poll_seconds)
    serve_until_signalled(server, echo=lambda message: click.echo(message), grace=grace_seconds)
    click.echo("stopped")


@main.command()
@click.option("--server", required=True, metavar="HOST:PORT", help="gRPC address of usss-tf serve or TF Serving.")
@click.option("--model", default=contract.DEFAULT_MODEL_NAME, show_default=True, help="Model name on the server.")
@click.option("--version", type=click.IntRange(min=0), default=None, help="Model version (default: the newest).")
@click.option("--domain", required=True, help="Label space to segment in (signature segment_<domain>).")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for <stem>_ids.png and <stem>_overlay.png.")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds per request.")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(min=1),
              help="Most images per request (images of different sizes never share one).")
@_friendly_errors
def predict(server, model, version, domain, images, out_dir, timeout, batch):
    """Segment IMAGE files on a model server; writes class-id PNGs and colour overlays."""
    from usss_tf.serving import client

    results = client.predict_files(server, domain, images, out_dir, model=model, version=version,
                                   timeout=timeout, batch=batch)
    for image, ids_path, overlay_path in results:
        click.echo(f"{image}: {ids_path} {overlay_path}")


if __name__ == "__main__":
    main()
