"""Reads PyTorch checkpoint files (``torch.save`` of a state dict) without PyTorch.

A user converting the DRN ImageNet checkpoints should not need PyTorch's
PyPI wheel (about 5 GB with its CUDA libraries) next to TensorFlow. Both of
``torch.save``'s formats are read:

* the zip format (PyTorch >= 1.6): ``<name>/data.pkl`` plus one raw file per
  storage under ``<name>/data/``;
* the legacy format (the 2017 DRN checkpoints): pickles of a magic number, a
  protocol version and system info, the object, the storage keys, then each
  storage as an 8-byte element count and its raw bytes.

Unpickling is restricted to the few globals a state dict needs (tensor
rebuild functions, storage types, ``OrderedDict``), like
``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from usss_tf.errors import ConfigError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage type -> numpy dtype (bfloat16 is read as its raw 16 bits).
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage whose bytes may arrive after the pickle (legacy format)."""

    def __init__(self, storage_type, numel):
        self.storage_type = storage_type
        self.numel = numel
        self.array = None


class _PendingTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(size), tuple(stride)

    def materialize(self, source):
        array = self.storage.array
        if array is None:
            raise ConfigError(f"{source}: a tensor's storage is missing from the file")
        count = int(np.prod(self.size)) if self.size else 1
        needed = self.offset + (
            sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1 if count else 0
        )
        if needed > array.size:
            raise ConfigError(
                f"{source}: a tensor of shape {self.size} reaches past its storage "
                f"({needed} > {array.size} elements): the file is corrupt"
            )
        view = np.lib.stride_tricks.as_strided(
            array[self.offset:], shape=self.size,
            strides=tuple(s * array.itemsize for s in self.stride),
        )
        result = np.array(view)  # Own copy, contiguous.
        if self.storage.storage_type.name == "BFloat16Storage":
            result = (result.astype(np.uint32) << 16).view(np.float32)
        return result


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, source, load_storage):
        super().__init__(file, encoding="latin1")
        self.source = source
        self.load_storage = load_storage

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ConfigError(
                f"{self.source}: the checkpoint refers to {module}.{name}, which is not part of a "
                "plain state dict of tensors; save the model's state_dict() instead"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ConfigError(f"{self.source}: unsupported persistent id {pid!r}")
        return self.load_storage(pid)


def _materialize(value, source):
    if isinstance(value, _PendingTensor):
        return value.materialize(source)
    if isinstance(value, dict):
        return collections.OrderedDict((k, _materialize(v, source)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialize(v, source) for v in value)
    return value


def _read_zip(path, archive):
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pickles:
        raise ConfigError(f"{path}: a zip file without data.pkl is not a PyTorch checkpoint")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder_name = f"{prefix}byteorder"
    byteorder = archive.read(byteorder_name).decode() if byteorder_name in names else "little"
    storages = {}

    def load_storage(pid):
        _, storage_type, key, _location, numel = pid[:5]
        if key not in storages:
            storage = _Storage(storage_type, numel)
            member = f"{prefix}data/{key}"
            if member not in names:
                raise ConfigError(f"{path}: storage {member} is missing: the file is truncated")
            dtype = storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
            raw = archive.read(member)
            storage.array = np.frombuffer(raw, dtype=dtype, count=len(raw) // dtype.itemsize)
            storages[key] = storage
        return storages[key]

    return _Unpickler(io.BytesIO(archive.read(pickles[0])), path, load_storage).load()


def _read_legacy(path, file):
    def header(what):
        try:
            return pickle.load(file)
        except Exception:
            raise ConfigError(f"{path}: not a PyTorch checkpoint (unreadable {what})") from None

    if header("magic number") != LEGACY_MAGIC:
        raise ConfigError(f"{path}: not a PyTorch checkpoint (wrong magic number)")
    if header("protocol version") != LEGACY_PROTOCOL:
        raise ConfigError(f"{path}: unsupported legacy PyTorch protocol version")
    sys_info = header("system info")
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise ConfigError(f"{path}: big-endian legacy checkpoints are not supported")
    storages, views = {}, []

    def load_storage(pid):
        _, storage_type, key, _location, numel, view = (tuple(pid) + (None,))[:6]
        root = storages.setdefault(key, _Storage(storage_type, numel))
        if view is None:
            return root
        _view_key, offset, view_size = view
        storage = _Storage(storage_type, view_size)
        views.append((storage, root, offset))
        return storage

    result = _Unpickler(file, path, load_storage).load()
    keys = header("storage keys")
    for key in keys:
        storage = storages.get(key)
        count_bytes = file.read(8)
        if storage is None or len(count_bytes) < 8:
            raise ConfigError(f"{path}: storage {key!r} is missing: the file is truncated")
        (count,) = struct.unpack("<q", count_bytes)
        raw = file.read(count * storage.storage_type.dtype.itemsize)
        if len(raw) < count * storage.storage_type.dtype.itemsize:
            raise ConfigError(f"{path}: storage {key!r} is cut short: the file is truncated")
        storage.array = np.frombuffer(raw, dtype=storage.storage_type.dtype.newbyteorder("<"))
    for storage, root, offset in views:
        if root.array is not None:
            storage.array = root.array[offset: offset + storage.numel]
    return result


def load_state_dict(path):
    """Returns the ``{key: numpy array}`` state dict a ``.pth`` file holds.

    Accepts a bare state dict or one under ``"state_dict"`` / ``"model"`` (as
    training scripts save them), and strips ``DataParallel``'s ``module.``
    prefix. Raises ``ConfigError`` naming the file for anything else.
    """
    path = str(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                result = _read_zip(path, archive)
        else:
            with open(path, "rb") as file:
                result = _read_legacy(path, file)
    except ConfigError:
        raise
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except Exception as error:  # pickle/zip errors of a corrupt file.
        raise ConfigError(f"{path}: not a readable PyTorch checkpoint ({error})") from None
    if isinstance(result, dict):
        for nested in ("state_dict", "model"):
            if isinstance(result.get(nested), dict):
                result = result[nested]
                break
    if not isinstance(result, dict) or not result:
        raise ConfigError(f"{path}: expected a state dict (key -> tensor), got {type(result).__name__}")
    state = _materialize(result, path)
    arrays = collections.OrderedDict()
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            continue
        name = key[len("module."):] if str(key).startswith("module.") else str(key)
        arrays[name] = value
    if not arrays:
        raise ConfigError(f"{path}: the checkpoint holds no tensors")
    return arrays
