"""Experiment configuration: dataclasses loaded from YAML and validated on load.

A config is a tree of dataclasses. ``load_config`` reads YAML with
``yaml.safe_load``, applies ``--set dotted.key=value`` overrides, and checks
every key and type, so a mistake is reported as ``key 'train.steps': ...``
before any work starts rather than as a stack trace an hour in.
"""

import dataclasses
import pathlib
import types
import typing

import yaml

from usss_tf.errors import ConfigError

# supervised: one model per domain; finetune: train on the first domain, then
# fine-tune on the others; univ_basic: shared encoder, supervised loss only;
# univ_full: all losses of the paper (entropy module).
METHODS = ("supervised", "finetune", "univ_basic", "univ_full")
BACKBONES = ("erfnet", "drn_d_22", "drn_d_38")
OPTIMIZERS = ("adamw", "sgd")
SOURCES = ("folder", "tfds")
ON_BROKEN = ("stop", "skip")


@dataclasses.dataclass
class DomainConfig:
    """One domain of the experiment: which registered label space, where its data is."""

    name: str = ""
    root: str = ""
    labeled: int = 10  # N: labelled training images, drawn by a seeded draw.
    unlabeled: typing.Optional[int] = None  # cap on unlabelled images; None = all others.
    train_split: str = "train"
    val_split: str = "val"
    scale: float = 1.0  # resize factor applied to this domain's images before cropping.
    generate: bool = False  # synthetic domains only: write the data if root is missing.
    # Where the data comes from: "folder" (root = the extracted dataset) or
    # "tfds" (root = the TFDS data_dir; see usss_tf.data.tfds_source).
    source: str = "folder"
    manual_dir: typing.Optional[str] = None  # tfds only: the manual-download zips.


@dataclasses.dataclass
class ModelConfig:
    backbone: str = "erfnet"
    width: float = 1.0  # channel multiplier of the backbone.
    embedding_dim: int = 64
    centroids_per_class: int = 3
    temperature: float = 0.1
    dropout: float = 0.0
    sync_batchnorm: bool = False
    backbone_weights: typing.Optional[str] = None  # local weights file, never downloaded.


@dataclasses.dataclass
class AugmentConfig:
    min_scale: float = 0.75
    max_scale: float = 1.25
    flip: bool = True
    photometric: bool = True


@dataclasses.dataclass
class DataConfig:
    crop: typing.List[int] = dataclasses.field(default_factory=lambda: [128, 256])
    batch_size: int = 4  # labelled images per domain per step (global).
    unlabeled_batch_size: int = 4  # unlabelled images per domain per step (global).
    eval_batch_size: int = 4
    max_val_images: typing.Optional[int] = None
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    # A present but broken example (missing label, size mismatch, unknown raw
    # ids, unreadable file): "stop" the run naming the file, or "skip" it and
    # record it in manifest.json (usss_tf.data.sources).
    on_broken: str = "stop"


@dataclasses.dataclass
class LossConfig:
    supervised: float = 1.0
    within_entropy: float = 0.1  # beta in the paper.
    cross_entropy: float = 0.1  # alpha in the paper.
    embedding_supervision: float = 1.0  # 0 reproduces the published code.


@dataclasses.dataclass
class CentroidConfig:
    pixels_per_class: int = 2000
    refresh_every: int = 0  # universal-stage steps between centroid refreshes; 0 = never.


@dataclasses.dataclass
class TrainConfig:
    pretrain_steps: int = 500
    steps: int = 500  # universal-stage steps.
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only.
    poly_power: float = 0.9
    checkpoint_every: int = 100
    eval_every: int = 0  # 0 = at checkpoints.
    log_every: int = 10
    verbose: int = 1
    # TensorBoard image panels (input | truth | prediction [| nearest centroid]):
    # written at every validation and every `image_every` steps (None = the
    # validation interval, 0 = only at validations), `panel_images` per domain.
    image_every: typing.Optional[int] = None
    panel_images: int = 3  # 0 = no panels.
    precision: str = "float32"  # or mixed_float16 / mixed_bfloat16 (see usss_tf.precision).


@dataclasses.dataclass
class ExperimentConfig:
    name: str = "experiment"
    method: str = "univ_full"
    seed: int = 0
    domains: typing.List[DomainConfig] = dataclasses.field(default_factory=list)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    centroids: CentroidConfig = dataclasses.field(default_factory=CentroidConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    @property
    def domain_names(self):
        return [d.name for d in self.domains]

    def to_dict(self):
        return dataclasses.asdict(self)


def _type_name(tp):
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value, tp, key):
    """Converts a YAML value to type ``tp``, raising ``ConfigError`` naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"key '{key}': expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin in (list, typing.List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"key '{key}': expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_convert(v, item_type, f"{key}.{i}") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"key '{key}': expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"key '{key}': expected a string, got {value!r}")
    raise ConfigError(f"key '{key}': unsupported type {_type_name(tp)}")


def _build(cls, mapping, prefix=""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in mapping.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown key '{path}'; expected one of: {', '.join(sorted(names))}"
            )
        kwargs[key] = _convert(value, hints[key], path)
    return cls(**kwargs)


def _parse_override(text):
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override '{key}': value {raw!r} is not valid YAML: {error}")
    return key, value


def _apply_override(tree, key, value):
    """Sets ``key`` (dotted; list items by index, e.g. ``domains.0.root``) in ``tree``.

    The key is checked against the dataclass schema, so a typo is an error
    rather than a silently ignored setting.
    """
    parts = key.split(".")
    node, schema = tree, ExperimentConfig
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"override '{key}': '{here}' is not an index of a list of {len(node)} items"
                )
            part = int(part)
            child_schema = schema
        else:
            names = {f.name for f in dataclasses.fields(schema)} if schema else set()
            if part not in names:
                raise ConfigError(
                    f"override '{key}': key '{here}' does not exist"
                    + (f"; expected one of: {', '.join(sorted(names))}" if names else "")
                )
            field_type = typing.get_type_hints(schema)[part]
            if typing.get_origin(field_type) in (list, typing.List):
                item_type = typing.get_args(field_type)[0]
                child_schema = item_type if dataclasses.is_dataclass(item_type) else None
                node.setdefault(part, [])
            else:
                child_schema = field_type if dataclasses.is_dataclass(field_type) else None
                if child_schema is not None and not isinstance(node.get(part), dict):
                    node[part] = {}
        if last:
            node[part] = value
            return
        if not isinstance(node[part], (dict, list)):
            raise ConfigError(f"override '{key}': '{here}' is not a mapping or list")
        node, schema = node[part], child_schema


def validate_config(config):
    """Checks cross-field rules; raises ``ConfigError`` naming the key."""
    if config.method not in METHODS:
        raise ConfigError(
            f"key 'method': unknown method {config.method!r}; expected one of: {', '.join(METHODS)}"
        )
    if not config.domains:
        raise ConfigError("key 'domains': at least one domain is required")
    if config.method == "finetune" and len(config.domains) < 2:
        raise ConfigError("key 'method': 'finetune' needs at least two domains (source, then target)")
    from usss_tf import domains as domain_registry

    seen = set()
    for i, d in enumerate(config.domains):
        if not d.name:
            raise ConfigError(f"key 'domains.{i}.name': a domain name is required")
        try:
            domain = domain_registry.get_domain(d.name)
        except KeyError as error:
            raise ConfigError(f"key 'domains.{i}.name': {error}") from None
        if d.name in seen:
            raise ConfigError(f"key 'domains.{i}.name': domain {d.name!r} is listed twice")
        seen.add(d.name)
        if not d.root:
            raise ConfigError(f"key 'domains.{i}.root': a data folder is required")
        if d.labeled < 1:
            raise ConfigError(f"key 'domains.{i}.labeled': must be at least 1, got {d.labeled}")
        if d.unlabeled is not None and d.unlabeled < 0:
            raise ConfigError(f"key 'domains.{i}.unlabeled': must be >= 0, got {d.unlabeled}")
        if d.scale <= 0:
            raise ConfigError(f"key 'domains.{i}.scale': must be > 0, got {d.scale}")
        if d.generate and not domain.synthetic:
            raise ConfigError(
                f"key 'domains.{i}.generate': only synthetic domains can be generated, "
                f"{d.name!r} is not one"
            )
        if d.source not in SOURCES:
            raise ConfigError(
                f"key 'domains.{i}.source': expected one of: {', '.join(SOURCES)}, got {d.source!r}"
            )
        from usss_tf.data import tfds_source

        if d.source == "tfds" and not tfds_source.supports(d.name):
            raise ConfigError(
                f"key 'domains.{i}.source': domain {d.name!r} has no TFDS source; "
                f"available for: {', '.join(sorted(tfds_source.TFDS_BUILDERS))}"
            )
        if d.manual_dir is not None and d.source != "tfds":
            raise ConfigError(f"key 'domains.{i}.manual_dir': only used with source: tfds")
    m = config.model
    if m.backbone not in BACKBONES:
        raise ConfigError(
            f"key 'model.backbone': unknown backbone {m.backbone!r}; expected one of: "
            f"{', '.join(BACKBONES)}"
        )
    for key, value in (("model.width", m.width), ("model.temperature", m.temperature)):
        if value <= 0:
            raise ConfigError(f"key '{key}': must be > 0, got {value}")
    for key, value in (
        ("model.embedding_dim", m.embedding_dim),
        ("model.centroids_per_class", m.centroids_per_class),
        ("data.batch_size", config.data.batch_size),
        ("data.eval_batch_size", config.data.eval_batch_size),
        ("centroids.pixels_per_class", config.centroids.pixels_per_class),
        ("train.checkpoint_every", config.train.checkpoint_every),
        ("train.log_every", config.train.log_every),
    ):
        if value < 1:
            raise ConfigError(f"key '{key}': must be at least 1, got {value}")
    if config.data.on_broken not in ON_BROKEN:
        raise ConfigError(
            f"key 'data.on_broken': expected one of: {', '.join(ON_BROKEN)}, "
            f"got {config.data.on_broken!r}"
        )
    if config.data.unlabeled_batch_size < 0:
        raise ConfigError("key 'data.unlabeled_batch_size': must be >= 0")
    if len(config.data.crop) != 2 or min(config.data.crop) < 8:
        raise ConfigError(f"key 'data.crop': expected [height, width] >= 8, got {config.data.crop}")
    if any(c % 8 for c in config.data.crop):
        raise ConfigError(
            f"key 'data.crop': height and width must be multiples of 8 (output stride), "
            f"got {config.data.crop}"
        )
    a = config.data.augment
    if not 0 < a.min_scale <= a.max_scale:
        raise ConfigError(
            f"key 'data.augment': need 0 < min_scale <= max_scale, got {a.min_scale}, {a.max_scale}"
        )
    for key in ("pretrain_steps", "steps", "eval_every"):
        if getattr(config.train, key) < 0:
            raise ConfigError(f"key 'train.{key}': must be >= 0")
    if config.train.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"key 'train.optimizer': unknown optimizer {config.train.optimizer!r}; expected one "
            f"of: {', '.join(OPTIMIZERS)}"
        )
    if config.train.learning_rate <= 0:
        raise ConfigError("key 'train.learning_rate': must be > 0")
    if config.train.image_every is not None and config.train.image_every < 0:
        raise ConfigError("key 'train.image_every': must be >= 0 (0 = panels only at validations)")
    if config.train.panel_images < 0:
        raise ConfigError("key 'train.panel_images': must be >= 0 (0 = no image panels)")
    from usss_tf import precision

    precision.check_policy(config.train.precision, "train.precision")
    for key, value in dataclasses.asdict(config.loss).items():
        if value < 0:
            raise ConfigError(f"key 'loss.{key}': must be >= 0, got {value}")
    return config


def config_from_dict(mapping, overrides=(), source="<dict>"):
    """Builds a validated ``ExperimentConfig`` from a raw mapping plus overrides."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(mapping).__name__}")
    mapping = _deep_copy(mapping)
    for text in overrides:
        key, value = _parse_override(text)
        _apply_override(mapping, key, value)
    try:
        config = _build(ExperimentConfig, mapping)
        return validate_config(config)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def load_config(path, overrides=()):
    """Reads a YAML experiment config, applies ``overrides``, validates it."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        mapping = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return config_from_dict(mapping, overrides, source=str(path))


def dump_config(config):
    """The config as YAML text, in field order (what ``load_config`` reads back)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def save_config(config, path):
    pathlib.Path(path).write_text(dump_config(config))


def _deep_copy(value):
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


# Keys that change how a run is watched, not what it computes: a run may be
# resumed with them changed, and they are not hyper-parameters.
WATCH_ONLY_KEYS = frozenset({
    "train.verbose", "train.log_every", "train.checkpoint_every", "train.eval_every",
    "train.image_every", "train.panel_images",
})


def flatten(mapping, prefix=""):
    """``{"a": {"b": 1}, "l": [{"c": 2}]}`` -> ``{"a.b": 1, "l.0.c": 2}`` (dotted config keys)."""
    flat = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{path}.{i}."))
        else:
            flat[path] = value
    return flat
