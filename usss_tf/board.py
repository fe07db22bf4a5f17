"""TensorBoard on a run directory (or a folder of runs), served on loopback.

``usss-tf board RUN_DIR`` and ``usss-tf train --tensorboard`` both go through
``launch``: TensorBoard's own server (``tensorboard.program.TensorBoard``) in
a background thread of this process, bound to 127.0.0.1 unless told
otherwise, so a run's images and hyper-parameters are not published to the
network by accident.

TensorBoard is pointed at the run directory itself (not its
``tensorboard/`` folder) or at a folder of many run directories (a study):
the HParams dashboard reads a run's metrics from the ``validation`` run
*below* the folder holding its hyper-parameters, and finds none when that
folder is the log directory's root. So runs show up as
``<run>/tensorboard/{train,validation}``.
"""

import pathlib
import time

from usss_tf.errors import ConfigError

DEFAULT_PORT = 6006
DEFAULT_HOST = "127.0.0.1"


def resolve_logdir(path):
    """The log directory for ``path``: a run directory or a folder of runs, which must exist."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such directory; expected a run directory or a folder of runs")
    return path


def launch(path, port=DEFAULT_PORT, host=DEFAULT_HOST):
    """Starts TensorBoard on ``path`` in a background (daemon) thread; returns its URL.

    ``port`` 0 lets the operating system pick a free port. The server lives
    as long as this process.
    """
    from tensorboard import program

    logdir = resolve_logdir(path)
    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(logdir), "--port", str(port), "--host", host])
    try:
        return board.launch()
    except program.TensorBoardServerException as error:
        raise ConfigError(f"tensorboard on {host}:{port}: {error.msg}") from None


def serve_forever(poll_seconds=3600):
    """Blocks until Ctrl-C (the server thread dies with the process)."""
    try:
        while True:
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        pass
