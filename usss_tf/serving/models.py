"""The versions of one model on disk, loaded and kept current while the server runs.

The layout is TF Serving's: ``<model_base>/<version>/saved_model.pb`` with an
integer version. Folders whose name is not an integer (``usss-tf export``
writes into a temporary, non-integer folder and renames it into place) and
integer folders without ``saved_model.pb`` yet are ignored, so a half-written
version is never loaded.

Version policy (TF Serving's default, "latest"): the newest version is loaded
at start and a poll thread loads each newer one as it appears, then unloads
the versions it replaced. A request that names an older version still on disk
loads it on demand (kept until the next new version arrives); a version that is
not on disk is NOT_FOUND. A version that fails to load is reported once and left
out (the previous one keeps serving) until its folder's content changes, e.g.
a copy that was still in progress finishes.

Like TF Serving, a version replays the warm-up requests of its
``assets.extra/tf_serving_warmup_requests`` before it is served, so the first
real request does not pay for graph instantiation.

Each loaded version carries the signature defs read from its MetaGraphDef
(``saved_model.pb``, tag ``serve``) -- what GetModelMetadata returns, and what
requests are checked against -- and the concrete functions of
``tf.saved_model.load`` that run them.
"""

import concurrent.futures
import dataclasses
import logging
import pathlib
import threading
import time

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from usss_tf.errors import ServingError
from usss_tf.serving import contract
from usss_tf.serving.model_config import ModelEntry, read_model_config
from usss_tf.serving.signatures import SignatureRunner
from usss_tf.serving.status import not_found

log = logging.getLogger(__name__)

_MAX_WARMUP_REQUESTS = 1000  # TF Serving's cap
# Signature-def entries that are not callable signatures (TF2's init op).
_INTERNAL_PREFIX = "__"


def read_signature_defs(export_dir, tag="serve"):
    """{name: SignatureDef} of the MetaGraphDef tagged ``tag`` in ``export_dir/saved_model.pb``."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((pathlib.Path(export_dir) / "saved_model.pb").read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return {name: signature for name, signature in meta_graph.signature_def.items()
                    if not name.startswith(_INTERNAL_PREFIX)}
    raise ServingError(f"{export_dir}: no MetaGraphDef tagged {tag!r} in saved_model.pb")


@dataclasses.dataclass
class LoadedVersion:
    """One version of the model, ready to run.

    Attributes:
      version: the integer version (the folder name).
      path: the version folder.
      signature_defs: {name: SignatureDef} from the MetaGraphDef.
      runners: {name: SignatureRunner}.
      saved_model: the object ``tf.saved_model.load`` returned (owns the variables).
    """

    version: int
    path: pathlib.Path
    signature_defs: dict
    runners: dict
    saved_model: object

    @classmethod
    def load(cls, version, path):
        signature_defs = read_signature_defs(path)
        saved_model = tf.saved_model.load(str(path))
        runners = {name: SignatureRunner(name, signature_defs[name], function)
                   for name, function in saved_model.signatures.items() if name in signature_defs}
        loaded = cls(version=version, path=pathlib.Path(path), signature_defs=signature_defs,
                     runners=runners, saved_model=saved_model)
        loaded.warm_up()
        return loaded

    def warm_up(self):
        """Replays the export's warm-up Predict requests; returns how many ran.

        A failing warm-up request fails the load, as in TF Serving: a version
        that cannot answer its own examples is not served.
        """
        path = self.path / contract.WARMUP_PATH
        if not path.is_file():
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(str(path)).take(_MAX_WARMUP_REQUESTS):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                continue
            request = entry.predict_log.request
            runner = self.runner(request.model_spec.signature_name, request.model_spec.name)
            runner.run({name: tf.make_ndarray(proto) for name, proto in request.inputs.items()},
                       request.output_filter)
            count += 1
        return count

    def runner(self, signature_name, model_name):
        """The runner of ``signature_name`` (``serving_default`` when empty); NOT_FOUND otherwise."""
        name = signature_name or contract.DEFAULT_SIGNATURE
        try:
            return self.runners[name]
        except KeyError:
            raise not_found(
                f"model '{model_name}' version {self.version} has no signature '{name}'; "
                f"it has: {', '.join(sorted(self.runners))}"
            ) from None


def versions_on_disk(model_base):
    """{version: folder} of the complete integer version folders under ``model_base``."""
    return contract.version_folders(model_base, complete_only=True)


def _fingerprint(path):
    """Changes when anything under ``path`` is added, removed or rewritten."""
    stats = [p.stat() for p in pathlib.Path(path).rglob("*")]
    return len(stats), max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats)


class ModelStore:
    """The loaded versions of one model from its base path, refreshed by a poll thread.

    ``get`` is safe from any thread. ``refresh`` runs once on ``start`` (so the
    served versions are loaded before the server answers) and then every
    ``poll_seconds`` on a daemon thread until ``stop``.

    The version policy is TF Serving's (``model_config.ModelEntry``): ``latest``
    (default: the newest version; when it fails to load, the one before keeps
    serving), ``all`` or ``specific``; ``labels`` name versions. Under
    ``latest``, a request may also pin an older version still on disk: it is
    loaded on demand, and at most ``max_pinned`` such versions stay loaded
    (least recently used first out). Concurrent requests for a version being
    loaded wait for that one load; a version that failed to load answers
    NOT_FOUND with its error, and its folder is looked at again at most once
    per ``poll_seconds``.
    """

    def __init__(self, model_base, name=contract.DEFAULT_MODEL_NAME, poll_seconds=2.0, max_pinned=1,
                 entry=None):
        self.entry = entry or ModelEntry(name=name, base_path=pathlib.Path(model_base))
        self.model_base = pathlib.Path(self.entry.base_path)
        self.name = self.entry.name
        self.poll_seconds = float(poll_seconds)
        self.max_pinned = int(max_pinned)
        self._versions = {}  # version -> LoadedVersion
        self._served = ()  # the versions the policy serves (newest first)
        self._latest = None  # the version requests without one get
        self._failed = {}  # version -> (folder fingerprint, error message, when checked)
        self._loading = {}  # version -> Future of its one load in progress
        self._used = {}  # pinned version -> time.monotonic() of its last request (LRU)
        self._lock = threading.Lock()  # guards the fields above
        self._load_lock = threading.Lock()  # one load at a time (poll thread and on-demand)
        self._stopping = threading.Event()
        self._thread = None

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name=f"{self.name}-version-poll", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.poll_seconds, 1.0) + 5.0)

    def _poll(self):
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the poll thread must outlive a bad folder
                log.exception("model %r: polling %s failed", self.name, self.model_base)

    # -- versions ----------------------------------------------------------

    def _serve(self, on_disk, current, failed):
        """``{version: LoadedVersion}`` the policy serves, loading those not in ``current``."""
        entry = self.entry
        latest = entry.policy == "latest"
        # Under latest, newest first: when the newest fails to load, the one before it serves.
        candidates = sorted(on_disk, reverse=True) if latest else entry.select(on_disk)
        serve = {}
        for version in candidates:
            if latest and len(serve) == entry.num_versions:
                break
            if version in current:
                serve[version] = current[version]
            elif version not in failed:
                loaded = self._load(version, on_disk[version])
                if loaded is not None:
                    serve[version] = loaded
        return serve

    def refresh(self):
        """Loads what the policy serves, drops what left the disk or the policy.

        Returns the newest served version when it changed, else None.
        """
        on_disk = versions_on_disk(self.model_base)
        with self._lock:
            for version in set(self._versions) - set(on_disk):
                log.info("model %r: version %d left %s; unloaded", self.name, version, self.model_base)
                del self._versions[version]
            current = dict(self._versions)
            failed = {v for v, path in on_disk.items()
                      if v in self._failed and self._failed[v][0] == _fingerprint(path)}
            before = self._latest
        serve = self._serve(on_disk, current, failed)
        with self._lock:
            pinned = {v: lv for v, lv in self._versions.items() if v in self._used and v not in serve}
            self._versions = {**pinned, **serve}
            self._used = {v: t for v, t in self._used.items() if v in pinned}
            self._served = tuple(sorted(serve, reverse=True))
            if serve:
                self._latest = max(serve)
            elif self._latest not in self._versions:
                self._latest = None
            latest = self._latest
        if latest is not None and latest != before:
            log.info("model %r: serving version %d from %s", self.name, latest, on_disk[latest])
            return latest
        return None

    def _load(self, version, path):
        with self._load_lock:
            with self._lock:
                if version in self._versions:
                    return self._versions[version]
            try:
                loaded = LoadedVersion.load(version, path)
            except Exception as error:  # noqa: BLE001 - a broken export must not stop the server
                message = f"{path}: cannot load: {type(error).__name__}: {error}".splitlines()[0]
                with self._lock:
                    self._failed[version] = (_fingerprint(path), message, time.monotonic())
                log.error("model %r: version %d %s", self.name, version, message)
                return None
            with self._lock:
                self._failed.pop(version, None)
            return loaded

    def check_name(self, model_name):
        """NOT_FOUND unless ``model_name`` is the model this store holds."""
        if model_name != self.name:
            raise not_found(f"model '{model_name}' not found; this server serves '{self.name}'")

    def version_for_label(self, label):
        """The version a label names (the config's ``version_labels``); NOT_FOUND otherwise."""
        labels = dict(self.entry.labels)
        if label not in labels:
            known = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
            raise not_found(f"model '{self.name}' has no version label '{label}' (labels: {known})")
        return labels[label]

    def get(self, model_name, version=None, label=None):
        """The ``LoadedVersion`` a request for ``model_name`` (``version`` or ``label``) gets.

        NOT_FOUND for another model, an unknown label, a version not on disk,
        outside the version policy, or one that failed to load.
        """
        self.check_name(model_name)
        if label:
            version = self.version_for_label(label)
        with self._lock:
            if version is None:
                if self._latest is None:
                    raise not_found(
                        f"model '{self.name}' has no version loaded yet; "
                        f"waiting for an integer version folder under {self.model_base}"
                    )
                return self._versions[self._latest]
            if version in self._versions:
                if version not in self._served:
                    self._used[version] = time.monotonic()
                return self._versions[version]
            failed = self._failed.get(version)
            if failed and time.monotonic() - failed[2] < self.poll_seconds:
                raise not_found(f"model '{self.name}' has no version {version} ({failed[1]})")
            if self.entry.policy != "latest":
                served = ", ".join(map(str, self._served)) or "none yet"
                raise not_found(f"model '{self.name}' does not serve version {version}: its version "
                                f"policy is '{self.entry.policy}' (serving: {served})")
            future, owner = self._loading.get(version), False
            if future is None:
                future, owner = concurrent.futures.Future(), True
                self._loading[version] = future
        if not owner:
            return future.result()  # Another request is loading this version: share its load.
        try:
            loaded = self._load_pinned(version)
            future.set_result(loaded)
            return loaded
        except BaseException as error:
            future.set_exception(error)
            raise
        finally:
            with self._lock:
                self._loading.pop(version, None)

    def _load_pinned(self, version):
        """Loads an older version a request asked for, keeping at most ``max_pinned`` of them."""
        on_disk = versions_on_disk(self.model_base)
        if version not in on_disk:
            listing = ", ".join(map(str, sorted(on_disk))) or "none"
            raise not_found(f"model '{self.name}' has no version {version} (versions on disk: {listing})")
        with self._lock:
            failed = self._failed.get(version)
            if failed:  # Checked again now: the folder may have been replaced.
                self._failed[version] = (failed[0], failed[1], time.monotonic())
        if failed and failed[0] == _fingerprint(on_disk[version]):
            raise not_found(f"model '{self.name}' has no version {version} ({failed[1]})")
        loaded = self._load(version, on_disk[version])
        if loaded is None:
            raise not_found(f"model '{self.name}' has no version {version} ({self._failed[version][1]})")
        with self._lock:
            self._versions.setdefault(version, loaded)
            self._used[version] = time.monotonic()
            pinned = sorted((t, v) for v, t in self._used.items() if v not in self._served)
            for _, old in pinned[: max(len(pinned) - self.max_pinned, 0)]:
                self._versions.pop(old, None)
                self._used.pop(old, None)
                log.info("model %r: unloaded pinned version %d (least recently used)", self.name, old)
        log.info("model %r: loaded version %d on request", self.name, version)
        return loaded

    def loaded(self):
        """The loaded versions, newest first."""
        with self._lock:
            return sorted(self._versions, reverse=True)

    def statuses(self):
        """[(version, error message or None)] of the loaded and the failed versions, newest first."""
        with self._lock:
            entries = {v: None for v in self._versions}
            entries.update({v: failed[1] for v, failed in self._failed.items() if v not in entries})
        return sorted(entries.items(), reverse=True)


class ModelRegistry:
    """Every served model by name: one ``ModelStore`` each, from a model base or a config file.

    With ``config_file`` (TF Serving's ``--model_config_file``), the file is read
    at ``start`` and, every ``config_poll_seconds`` (0: never), again when it
    changed: new models are loaded, removed ones unloaded, changed ones
    (base path, policy, labels) replaced once their new store is loaded. A file
    that no longer parses is logged and the models keep serving.

    Args:
      entries: ``model_config.ModelEntry`` list (or None with ``config_file``).
      config_file, mounts: the config file and its container-path mounts.
      poll_seconds, max_pinned: for every store.
    """

    def __init__(self, entries=None, config_file=None, mounts=None, poll_seconds=2.0, max_pinned=1,
                 config_poll_seconds=0.0):
        self.config_file = config_file
        self.mounts = dict(mounts or {})
        self.poll_seconds = poll_seconds
        self.max_pinned = max_pinned
        self.config_poll_seconds = float(config_poll_seconds)
        self._entries = list(entries or [])
        self._stores = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = None
        self._config_stamp = None

    def _store(self, entry):
        return ModelStore(entry.base_path, entry.name, poll_seconds=self.poll_seconds,
                          max_pinned=self.max_pinned, entry=entry)

    def start(self):
        if self.config_file is not None:
            self._config_stamp = self._stamp()
            self._entries = read_model_config(self.config_file, self.mounts)
        self._stores = {e.name: self._store(e).start() for e in self._entries}
        if self.config_file is not None and self.config_poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll, name="model-config-poll", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config_poll_seconds + 5.0)
        for store in self.stores():
            store.stop()

    def _stamp(self):
        try:
            stat = pathlib.Path(self.config_file).stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _poll(self):
        while not self._stopping.wait(self.config_poll_seconds):
            stamp = self._stamp()
            if stamp == self._config_stamp:
                continue
            self._config_stamp = stamp
            try:
                self.reload()
            except Exception:  # noqa: BLE001 - a bad edit must not stop the models serving
                log.exception("model config %s: not reloaded", self.config_file)

    def reload(self):
        """Reads the config file again and applies what changed; returns the names served."""
        entries = {e.name: e for e in read_model_config(self.config_file, self.mounts)}
        with self._lock:
            current = dict(self._stores)
        started = {name: self._store(entry).start() for name, entry in entries.items()
                   if name not in current or current[name].entry != entry}
        with self._lock:
            self._stores = {name: started.get(name, current.get(name)) for name in entries}
        for name, store in current.items():
            if name not in entries or name in started:
                store.stop()
                log.info("model %r: %s", name, "removed" if name not in entries else "replaced")
        log.info("model config %s: serving %s", self.config_file, ", ".join(sorted(entries)))
        return sorted(entries)

    def stores(self):
        with self._lock:
            return list(self._stores.values())

    def names(self):
        with self._lock:
            return sorted(self._stores)

    def serves(self, model_name):
        """Whether ``model_name`` is one of the served models (loaded or not yet)."""
        with self._lock:
            return model_name in self._stores

    def store(self, model_name):
        """The ``ModelStore`` of ``model_name``; NOT_FOUND naming the served models otherwise."""
        with self._lock:
            store = self._stores.get(model_name)
            names = sorted(self._stores)
        if store is None:
            raise not_found(f"model '{model_name}' not found; this server serves: "
                            f"{', '.join(repr(n) for n in names) or 'no model'}")
        return store

    def get(self, model_name, version=None, label=None):
        return self.store(model_name).get(model_name, version, label)

    def loaded_counts(self):
        """``{model name: versions loaded}``, for the metrics."""
        return {store.name: len(store.loaded()) for store in self.stores()}
