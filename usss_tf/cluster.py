"""Training on several machines: the cluster ``TF_CONFIG`` describes, and who writes.

Kubeflow's TFJob, Vertex AI custom jobs and Ray Train's ``TensorflowTrainer``
all describe a TensorFlow cluster in the ``TF_CONFIG`` environment variable::

    {"cluster": {"worker": ["host0:port", "host1:port"]},
     "task": {"type": "worker", "index": 0}}

When it names more than one task, ``usss-tf train`` runs under
``tf.distribute.MultiWorkerMirroredStrategy`` (which must be created before
any other TensorFlow op, hence ``strategy_from_environment`` at program
start). The chief (the ``chief`` task, else worker 0) writes the run
directory; the others compute the same steps and write nothing there.
"""

import dataclasses
import json
import os

from usss_tf.errors import ConfigError

TF_CONFIG = "TF_CONFIG"
TASK_TYPES = ("chief", "worker")
# Collective operations (gradient all-reduce, variable broadcast) give up after
# this long: a dead or unreachable peer ends the run with an error, not a hang.
DEFAULT_TIMEOUT_SECONDS = 300.0


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The parsed ``TF_CONFIG``: every task's address, and which task this process is."""

    tasks: dict  # type -> [addresses]
    task_type: str
    task_index: int

    @property
    def num_workers(self):
        return sum(len(addresses) for addresses in self.tasks.values())

    @property
    def address(self):
        return self.tasks[self.task_type][self.task_index]

    @property
    def is_chief(self):
        if "chief" in self.tasks:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    def peers(self):
        """Every other task's address."""
        return [a for t, addresses in self.tasks.items() for i, a in enumerate(addresses)
                if (t, i) != (self.task_type, self.task_index)]


def _fail(message):
    raise ConfigError(f"environment variable {TF_CONFIG}: {message}")


def parse_tf_config(text):
    """``Cluster`` of a ``TF_CONFIG`` value; a ``ConfigError`` naming the field otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        _fail(f"not valid JSON ({error})")
    if not isinstance(value, dict):
        _fail("expected a JSON object with 'cluster' and 'task'")
    tasks = value.get("cluster")
    if not isinstance(tasks, dict) or not tasks:
        _fail("'cluster' must map task types to lists of host:port addresses")
    for task_type, addresses in tasks.items():
        if task_type not in TASK_TYPES + ("ps", "evaluator"):
            _fail(f"'cluster.{task_type}': unknown task type; expected {', '.join(TASK_TYPES)}")
        if task_type in ("ps", "evaluator"):
            _fail(f"'cluster.{task_type}': parameter-server and evaluator tasks are not supported; "
                  "MultiWorkerMirroredStrategy takes 'chief' and 'worker' tasks")
        if not isinstance(addresses, list) or not addresses:
            _fail(f"'cluster.{task_type}' must be a non-empty list of host:port addresses")
        for i, address in enumerate(addresses):
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                _fail(f"'cluster.{task_type}[{i}]': {address!r} is not a host:port address")
    if len(tasks.get("chief", [])) > 1:
        _fail("'cluster.chief' must hold one address")
    task = value.get("task")
    if not isinstance(task, dict):
        _fail("'task' must be an object with 'type' and 'index'")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in tasks:
        _fail(f"'task.type': {task_type!r} is not a task type of 'cluster' ({', '.join(tasks)})")
    if not isinstance(index, int) or not 0 <= index < len(tasks[task_type]):
        _fail(f"'task.index': {index!r} is not an index of 'cluster.{task_type}' "
              f"({len(tasks[task_type])} address(es))")
    return Cluster({k: [str(a) for a in v] for k, v in tasks.items()}, task_type, index)


def cluster_from_environment(environ=None):
    """The ``Cluster`` of ``TF_CONFIG`` if it names more than one task, else ``None``."""
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "").strip()
    if not text:
        return None
    cluster = parse_tf_config(text)
    return cluster if cluster.num_workers > 1 else None


_WATCHDOG = None


def multi_worker_strategy(cluster, timeout_seconds=DEFAULT_TIMEOUT_SECONDS):
    """``MultiWorkerMirroredStrategy`` for ``cluster`` (from ``TF_CONFIG``), all workers connected.

    Every collective phase is bounded by ``timeout_seconds`` (``watch``): a
    peer that never starts or dies ends this worker with a one-line error.
    """
    global _WATCHDOG
    import tensorflow as tf

    _WATCHDOG = Watchdog(cluster, timeout_seconds)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO,
        timeout_seconds=timeout_seconds,
    )
    with watch(f"connecting to the {cluster.num_workers} workers of {TF_CONFIG}"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        barrier_function(strategy)()
    return strategy


def barrier_function(strategy):
    """A ``tf.function`` that returns once every worker of ``strategy`` called it (a collective no-op)."""
    import tensorflow as tf

    return tf.function(lambda: strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None))


def watch(what):
    """``Watchdog.watch(what)`` of this process's multi-worker strategy; a no-op on one machine."""
    import contextlib

    return _WATCHDOG.watch(what) if _WATCHDOG is not None else contextlib.nullcontext()


def is_chief(strategy):
    """Whether this process writes the run directory under ``strategy`` (always on one machine,
    and for ``None``)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    spec = resolver.cluster_spec().as_dict()
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and int(resolver.task_id) == 0


def num_workers(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    return max(1, sum(len(v) for v in resolver.cluster_spec().as_dict().values()))


# The watchdog runs in its own small process: TensorFlow blocks in C++ while
# holding the GIL when a peer is missing, so no Python thread or signal
# handler of the worker itself would get to run.
_WATCHDOG_PROGRAM = r"""
import json, os, select, signal, socket, sys, time
parent, seconds, me, peers = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
deadline, what = None, None
while True:
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    ready, _, _ = select.select([sys.stdin], [], [], wait)
    if ready:
        line = sys.stdin.readline()
        if not line:
            sys.exit(0)  # The worker closed the pipe: it ended.
        command, _, text = line.rstrip("\n").partition(" ")
        deadline, what = (time.monotonic() + seconds, text) if command == "arm" else (None, None)
        continue
    missing = []
    for address in peers:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        except OSError:
            missing.append(address)
    detail = ("unreachable: " + ", ".join(missing)) if missing else (
        "peers " + ", ".join(peers) + " accept connections but did not answer")
    sys.stderr.write(f"error: worker {me}: {what} took longer than {seconds:g}s; {detail}\n")
    sys.stderr.flush()
    os.kill(parent, signal.SIGKILL)
    sys.exit(2)
"""


class Watchdog:
    """Ends the worker with a one-line error when a collective phase outlives ``seconds``.

    TensorFlow's collectives can wait forever on a peer that never started or
    died (and the worker then ignores SIGTERM). Each phase that needs every
    worker (connecting, a training step, a barrier) runs inside
    ``watch(what)``; past the deadline a separate watchdog process prints
    the error, naming the peers that no longer accept connections, and kills
    the worker (exit status 137).
    """

    def __init__(self, cluster, seconds):
        import subprocess
        import sys

        self.seconds = float(seconds)
        me = f"{cluster.address} ({cluster.task_type} {cluster.task_index})"
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG_PROGRAM, str(os.getpid()), str(self.seconds), me,
             json.dumps(cluster.peers())],
            stdin=subprocess.PIPE, text=True,
        )

    def _send(self, line):
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def watch(self, what):
        """Context manager: ``what`` must finish within the watchdog's seconds."""
        import contextlib

        @contextlib.contextmanager
        def phase():
            self._send(f"arm {what}")
            try:
                yield
            finally:
                self._send("disarm")

        return phase()
