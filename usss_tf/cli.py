"""The ``usss-tf`` command line: a thin layer over the library.

Errors from bad input (``UsssError``) are printed on one line and exit with
status 2; nothing else is caught.
"""

import functools
import os
import pathlib
import sys

import click

from usss_tf.errors import UsssError


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _friendly_errors(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
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
def main():
    """Universal semi-supervised semantic segmentation on TensorFlow."""
    _quiet_tensorflow()


@main.command()
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set train.steps=200 --set domains.0.root=/data/cs.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (default runs/<config name>). Re-running resumes it.")
@click.option("--devices", default=None, metavar="N|DEV,...",
              help="Devices for MirroredStrategy: a count or names like GPU:0,GPU:1 (default: all GPUs, else the CPU).")
@_friendly_errors
def train(config_path, overrides, run_dir, devices):
    """Train (or resume) the experiment described by CONFIG.yaml."""
    from usss_tf import config as config_lib

    config = config_lib.load_config(config_path, overrides)
    from usss_tf import train as train_lib

    run_dir = pathlib.Path(run_dir or pathlib.Path("runs") / config.name)
    results = train_lib.run_experiment(config, run_dir, devices=_parse_devices(devices), echo=click.echo)
    click.echo(train_lib.format_results(results))
    click.echo(f"run directory: {run_dir}")


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


@main.command("domains")
def list_domains():
    """List the registered domains and their label spaces."""
    from usss_tf import domains as registry

    for name in registry.registered_domains():
        domain = registry.get_domain(name)
        click.echo(f"{name:<14} {domain.layout:<11} {domain.num_classes:>3} classes: "
                   f"{', '.join(domain.class_names)}")


if __name__ == "__main__":
    main()
