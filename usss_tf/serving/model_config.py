"""TF Serving's ``--model_config_file``: several models, version policies, version labels.

The file is a ``ModelServerConfig`` in protobuf text format, parsed with TF
Serving's own proto (``tensorflow_serving.config.model_server_config_pb2``), so
a file ``usss-tf serve`` accepts is one ``tensorflow_model_server`` accepts::

    model_config_list {
      config {
        name: "usss"
        base_path: "/models/usss"
        model_platform: "tensorflow"
        model_version_policy { latest { num_versions: 1 } }   # or all {}, specific { versions: 3 }
        version_labels { key: "stable" value: 3 }
      }
    }

TF Serving wants absolute base paths, which inside its container are the
mounted folder's. ``mounts`` maps them back onto this machine the way
``docker run -v saved_models:/models`` maps them in: ``{"/models": "saved_models"}``.
"""

import dataclasses
import pathlib

from google.protobuf import text_format

from usss_tf.errors import ServingError


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One served model.

    Attributes:
      name: what clients ask for (``model_spec.name``).
      base_path: the folder of integer version folders, on this machine.
      policy: ``latest`` (the ``num_versions`` newest), ``all`` or ``specific`` (``versions``).
      num_versions: for ``latest``.
      versions: for ``specific``.
      labels: ``((label, version), ...)``, e.g. ``(("stable", 3),)``.
    """

    name: str
    base_path: pathlib.Path
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple = ()
    labels: tuple = ()

    def select(self, on_disk):
        """The versions this policy serves among ``on_disk`` (sorted), newest first."""
        newest_first = sorted(on_disk, reverse=True)
        if self.policy == "all":
            return newest_first
        if self.policy == "specific":
            return [v for v in newest_first if v in self.versions]
        return newest_first[: self.num_versions]


def _local_path(base_path, mounts, where):
    for container, local in mounts.items():
        container = container.rstrip("/")
        if base_path == container or base_path.startswith(container + "/"):
            return pathlib.Path(local) / base_path[len(container):].lstrip("/")
    if not base_path.startswith("/") and "://" not in base_path:
        raise ServingError(f"{where}: base_path {base_path!r} must be absolute (TF Serving refuses "
                           "relative ones); map a container path with --mount CONTAINER=LOCAL")
    return pathlib.Path(base_path)


def parse_model_config(text, source="<model config>", mounts=None):
    """The ``ModelEntry`` list of a ``ModelServerConfig`` text; ``ServingError`` naming the field."""
    from tensorflow_serving.config import model_server_config_pb2

    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:
        raise ServingError(f"{source}: not a ModelServerConfig: {error}") from None
    if config.HasField("custom_model_config"):
        raise ServingError(f"{source}: custom_model_config is not supported; use model_config_list")
    entries, names = [], set()
    for index, model in enumerate(config.model_config_list.config):
        where = f"{source}: model_config_list.config[{index}]"
        if not model.name:
            raise ServingError(f"{where}: name is required")
        if model.name in names:
            raise ServingError(f"{where}: model {model.name!r} is configured twice")
        names.add(model.name)
        if not model.base_path:
            raise ServingError(f"{where} ({model.name}): base_path is required")
        if model.model_platform not in ("", "tensorflow"):
            raise ServingError(f"{where} ({model.name}): model_platform {model.model_platform!r}; "
                               "only 'tensorflow' SavedModels are served")
        policy = model.model_version_policy.WhichOneof("policy_choice") or "latest"
        num_versions = model.model_version_policy.latest.num_versions or 1
        versions = tuple(model.model_version_policy.specific.versions)
        if policy == "specific" and not versions:
            raise ServingError(f"{where} ({model.name}): model_version_policy.specific lists no versions")
        labels = tuple(sorted(model.version_labels.items()))
        if policy == "specific":
            unserved = sorted({v for _, v in labels} - set(versions))
            if unserved:
                raise ServingError(f"{where} ({model.name}): version_labels point at version(s) "
                                   f"{unserved} that the specific policy does not serve")
        entries.append(ModelEntry(
            name=model.name, base_path=_local_path(model.base_path, mounts or {}, where),
            policy=policy, num_versions=num_versions, versions=versions, labels=labels,
        ))
    if not entries:
        raise ServingError(f"{source}: model_config_list configures no model")
    return entries


def read_model_config(path, mounts=None):
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ServingError(f"--model-config-file {path}: {error.strerror or error}") from None
    return parse_model_config(text, str(path), mounts)
