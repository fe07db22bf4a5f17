"""Experiment configuration: dataclasses loaded from YAML and validated on load.

A config is a tree of dataclasses. ``load_config`` reads YAML with
``yaml.safe_load``, applies ``--set dotted.key=value`` overrides, and checks
every key and type, so a mistake is reported as ``key 'train.steps': ...``
before any work starts rather than as a stack trace an hour in.
"""

import dataclasses
import pathlib
import re
import types
import typing

import yaml

from usss_tf.errors import ConfigError

# supervised: one model per domain; finetune: train on the first domain, then
# fine-tune on the others; univ_basic: shared encoder, supervised loss only;
# univ_paper: the paper's method (the entropy module); univ_full: masked image
# modelling first, then univ_paper's stages with weak-to-strong consistency
# (its defaults, METHOD_DEFAULTS, leave the unlabelled-pixel terms off).
METHODS = ("supervised", "finetune", "univ_basic", "univ_full", "univ_paper")
BACKBONES = ("erfnet", "drn_d_22", "drn_d_38", "drn_d_54", "drn_d_105", "hub")
# model.backbone_weights files read as PyTorch state dicts (DRN-D checkpoints).
TORCH_SUFFIXES = (".pth", ".pt")
OPTIMIZERS = ("adamw", "sgd")
MASKED_AUGMENTATIONS = ("training", "flips")
# The config's sections besides name/method/seed/domains, in file order.
SECTIONS = ("model", "data", "loss", "consistency", "masked_modelling", "centroids", "train")
SOURCES = ("folder", "tfds")
ON_BROKEN = ("stop", "skip")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def _check_choice(key, value, choices):
    if value not in choices:
        raise ConfigError(f"key '{key}': expected one of: {', '.join(choices)}, got {value!r}")


def _check_positive(section, config, names):
    for name in names:
        if getattr(config, name) <= 0:
            raise ConfigError(f"key '{section}.{name}': must be > 0, got {getattr(config, name)}")


def _check_at_least_one(section, config, names):
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"key '{section}.{name}': must be at least 1, got {getattr(config, name)}")


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

    def validate(self, key):
        """Checks this domain against the domain registry; ``key`` is e.g. ``domains.0``."""
        from usss_tf import domains as domain_registry  # the label spaces: a leaf module

        if not self.name:
            raise ConfigError(f"key '{key}.name': a domain name is required")
        try:
            domain = domain_registry.get_domain(self.name)
        except KeyError as error:
            raise ConfigError(f"key '{key}.name': {error}") from None
        if not self.root:
            raise ConfigError(f"key '{key}.root': a data folder is required")
        if self.labeled < 1:
            raise ConfigError(f"key '{key}.labeled': must be at least 1, got {self.labeled}")
        if self.unlabeled is not None and self.unlabeled < 0:
            raise ConfigError(f"key '{key}.unlabeled': must be >= 0, got {self.unlabeled}")
        if self.scale <= 0:
            raise ConfigError(f"key '{key}.scale': must be > 0, got {self.scale}")
        if self.generate and not domain.synthetic:
            raise ConfigError(
                f"key '{key}.generate': only synthetic domains can be generated, "
                f"{self.name!r} is not one"
            )
        _check_choice(f"{key}.source", self.source, SOURCES)
        if self.source == "tfds" and self.name not in domain_registry.TFDS_BUILDERS:
            raise ConfigError(
                f"key '{key}.source': domain {self.name!r} has no TFDS source; "
                f"available for: {', '.join(sorted(domain_registry.TFDS_BUILDERS))}"
            )
        if self.manual_dir is not None and self.source != "tfds":
            raise ConfigError(f"key '{key}.manual_dir': only used with source: tfds")


@dataclasses.dataclass
class ModelConfig:
    backbone: str = "erfnet"
    width: float = 1.0  # channel multiplier of the backbone.
    # Block multiplier of the backbone's residual stages: ceil(depth x blocks),
    # at least one per stage. 1.0 is the published network (the only depth DRN
    # checkpoints and keras-hub presets fit); less trains and traces faster (tests use 0.25).
    depth: float = 1.0
    embedding_dim: int = 64
    centroids_per_class: int = 3
    temperature: float = 0.1
    dropout: float = 0.0
    sync_batchnorm: bool = False
    # Local pretrained weights, never downloaded: a DRN .pth checkpoint, a Keras
    # .weights.h5, or (backbone: hub, required there) a keras-hub preset folder.
    backbone_weights: typing.Optional[str] = None

    def validate(self, key="model"):
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"key '{key}.backbone': unknown backbone {self.backbone!r}; expected one of: "
                f"{', '.join(BACKBONES)}"
            )
        if self.backbone == "hub" and not self.backbone_weights:
            raise ConfigError(
                f"key '{key}.backbone_weights': backbone 'hub' needs a keras-hub preset folder here"
            )
        _check_positive(key, self, ("width", "temperature"))
        if not 0 < self.depth <= 1:
            raise ConfigError(f"key '{key}.depth': expected 0 < depth <= 1, got {self.depth}")
        weights = pathlib.Path(self.backbone_weights or "")
        full_depth_weights = self.backbone == "hub" or weights.suffix in TORCH_SUFFIXES
        if self.depth != 1 and full_depth_weights:
            raise ConfigError(
                f"key '{key}.depth': {self.depth} is not 1.0, but '{key}.backbone_weights' "
                f"({self.backbone_weights}) holds the full-depth network"
            )
        _check_at_least_one(key, self, ("embedding_dim", "centroids_per_class"))


@dataclasses.dataclass
class AugmentConfig:
    # Random scale of every training crop, times the domain's scale: the range
    # DeepLab and UniMatch train with. On the synthetic domains it beat 0.75-1.25
    # for univ_full's defaults at N = 2 and 10 and for univ_basic at 900 universal
    # steps, and was level at the quickstart's 300 (docs/RESULTS.md, "A wider
    # scale range"). The paper's pipelines keep 1.0.
    min_scale: float = 0.5
    max_scale: float = 2.0
    flip: bool = True
    photometric: bool = True
    # Labelled crops get the next labelled crop's small-class pixels
    # (usss_tf.data.copy_paste.paste_within_labelled): an augmentation for
    # any method; univ_basic +5 mIoU with 2 labelled images per domain, +2-3
    # with 10, but -2.8 on synth_camvid with all 60 labelled (docs/RESULTS.md):
    # turn it off for large labelled sets. The paper's pipelines turn it off.
    copy_paste: bool = True
    # loss.cross_domain_supervision sees the other domains' labelled crops in
    # this domain's colours (usss_tf.data.colour_transfer: each channel's mean
    # and std matched to this domain's labelled crops of the step). No effect
    # without that term. Measured on the synthetic domains: docs/RESULTS.md,
    # "The other domains' labels in this domain's colours".
    cross_domain_colour: bool = True
    # Labelled crops show the classes whose labelled pixels already come in many
    # hues (hue concentration below class_hue_max_concentration: cars, people,
    # facades; not sky or vegetation) turned by a random hue angle, each such
    # class with probability class_hue_probability per crop (usss_tf.data.class_hue).
    # On the synthetic domains, N = 2 and 10, three seeds: mIoU up on average in
    # seven of the eight (method, N, domain) cells of univ_full and univ_basic,
    # level in the eighth (docs/RESULTS.md, "Classes that come in many colours").
    # The paper's pipelines turn it off.
    class_hue: bool = True
    class_hue_max_concentration: float = 0.8
    class_hue_probability: float = 0.5

    def validate(self, key="data.augment"):
        if not 0 < self.min_scale <= self.max_scale:
            raise ConfigError(
                f"key '{key}': need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}"
            )
        if not 0 < self.class_hue_max_concentration <= 1:
            raise ConfigError(f"key '{key}.class_hue_max_concentration': must be in (0, 1], "
                              f"got {self.class_hue_max_concentration}")
        if not 0 <= self.class_hue_probability <= 1:
            raise ConfigError(f"key '{key}.class_hue_probability': must be in [0, 1], "
                              f"got {self.class_hue_probability}")


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

    def validate(self, key="data"):
        _check_at_least_one(key, self, ("batch_size", "eval_batch_size"))
        _check_choice(f"{key}.on_broken", self.on_broken, ON_BROKEN)
        if self.unlabeled_batch_size < 0:
            raise ConfigError(f"key '{key}.unlabeled_batch_size': must be >= 0")
        if len(self.crop) != 2 or min(self.crop) < 8:
            raise ConfigError(f"key '{key}.crop': expected [height, width] >= 8, got {self.crop}")
        if any(c % 8 for c in self.crop):
            raise ConfigError(
                f"key '{key}.crop': height and width must be multiples of 8 (output stride), "
                f"got {self.crop}"
            )
        self.augment.validate(f"{key}.augment")


@dataclasses.dataclass
class LossConfig:
    """Weights of the loss terms; a stage trains the terms its method has (``usss_tf.method``).

    ``None`` (the default, or ``null`` in YAML) for ``cross_domain_supervision``
    and the three entropy-module weights means the method's default
    (``method_defaults``), filled in when the
    ``ExperimentConfig`` is built, so a config written in Python and one read
    from YAML get the same values and a saved ``config.yaml`` holds numbers.
    """

    supervised: float = 1.0
    # Each decoder also learns from the other domains' labelled pixels where the
    # label spaces correspond (usss_tf.transfer.CORRESPONDENCES: "vehicle" is car
    # or truck); every stage with the supervised loss, every method with two
    # such domains. It uses labels, not unlabelled images. None: the method's
    # default (univ_full 1, the others 0).
    cross_domain_supervision: typing.Optional[float] = None
    within_entropy: typing.Optional[float] = None  # beta in the paper.
    cross_entropy: typing.Optional[float] = None  # alpha in the paper.
    embedding_supervision: typing.Optional[float] = None  # 0 reproduces the published code.
    # Weak-to-strong consistency on unlabelled images (univ_full only; the
    # `consistency` section configures it): the strong CutMix view, the
    # feature-perturbation stream (channel dropout on the weak view's features),
    # and copy-paste (usss_tf.data.copy_paste: labelled pixels of the small classes
    # pasted into the unlabelled crops). Off by default: on the synthetic domains
    # at the converged schedule they cost mIoU against univ_basic, with the
    # entropy terms also after masked image modelling (docs/RESULTS.md). Switched on, the best weights of
    # the pilots were 0.25 for the feature stream and copy-paste (better than 0.5
    # in 18 of 20 seed pairs) and 0 for the strong view.
    consistency_strong: float = 0.0
    consistency_feature: float = 0.0
    consistency_paste: float = 0.0
    # Masked image modelling of the unlabelled crops alongside the other terms
    # of the universal stage (the masked stage's reconstruction head and
    # masked_modelling's cells and ratio; univ_full only).
    masked_auxiliary: float = 0.0

    def validate(self, key="loss"):
        for name, value in dataclasses.asdict(self).items():
            if value is None:
                raise ConfigError(f"key '{key}.{name}': no value (ExperimentConfig fills in the "
                                  "method's default)")
            if value < 0:
                raise ConfigError(f"key '{key}.{name}': must be >= 0, got {value}")


ALIGNMENT_TARGETS = ("batch", "labelled_set")


@dataclasses.dataclass
class ConsistencyConfig:
    """Weak-to-strong consistency (FixMatch / UniMatch) on each domain's unlabelled images.

    The pipeline's augmented unlabelled crop is the weak view; its own
    decoder's prediction, where the top probability is at least
    ``threshold`` (lowered for the classes the model is rarely confident
    about, ``class_adaptive_threshold``), is the pseudo-label of a strongly perturbed copy
    (colour jitter, grayscale, blur, and with probability ``cutmix`` a box
    pasted from another unlabelled image of the batch, pseudo-labels pasted
    with it) and of the weak features with whole channels dropped at rate
    ``feature_dropout``.
    """

    threshold: float = 0.95
    cutmix: float = 0.5
    feature_dropout: float = 0.2  # UniMatch's 0.5 is for 2048 channels; ERFNet at width 0.5 has 64.
    # Pseudo-label probabilities x (labelled class frequency / mean prediction),
    # renormalised (losses.align_distribution): counters the bias to frequent classes.
    distribution_alignment: bool = True
    # The labelled class frequency it aligns to: "labelled_set" (every labelled
    # image of the domain as stored, counted once when the pipeline is built)
    # or "batch" (the step's labelled crops, after augmentation: copy-paste
    # inflates the small classes there, and the pseudo-labels followed).
    alignment_target: str = "labelled_set"
    # The ratio's power (losses.align_distribution): 1 aligns fully, 0 not at all.
    # 0.5 measured worse than 1 (docs/RESULTS.md, "Tempered alignment").
    alignment_strength: float = 1.0
    # Per-class thresholds, lower for classes with few confident pixels
    # (losses.class_adaptive_thresholds, FlexMatch, per batch); false: one threshold
    # for all. Off by default: per batch, a class with no confident pixel gets
    # threshold 0, and at 2 labelled images per domain consistency then collapsed
    # (one threshold: +5.6 / +3.5 mIoU at N = 2, +0.8 / -0.7 at N = 10, seed-paired;
    # docs/RESULTS.md, "Consistency again").
    class_adaptive_threshold: bool = False
    color_jitter: float = 0.8  # Probability of colour jitter on the strong view.
    grayscale: float = 0.2
    blur: float = 0.5

    def validate(self, key="consistency"):
        for name in ("threshold", "cutmix", "color_jitter", "grayscale", "blur", "alignment_strength"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"key '{key}.{name}': must be in [0, 1], got {value}")
        _check_choice(f"{key}.alignment_target", self.alignment_target, ALIGNMENT_TARGETS)
        if not 0.0 <= self.feature_dropout < 1.0:
            raise ConfigError(f"key '{key}.feature_dropout': must be in [0, 1), got {self.feature_dropout}")


@dataclasses.dataclass
class MaskedModellingConfig:
    """Masked image modelling, ``univ_full``'s first stage (``train.masked_steps`` steps).

    Every training crop of every domain, labelled or not (labels unused), has
    a share ``mask_ratio`` of its ``patch`` x ``patch`` cells blanked; the
    encoder and a light reconstruction head learn to predict the blanked
    pixels (SimMIM, MAE). The unlabelled images thus give the encoder its
    starting point before any label is seen (``usss_tf.data.masking``).
    ``augment``: ``training``, the crops augmented as training crops are
    (``data.augment``); ``flips``, no random scale and no colour jitter (the
    targets are the images' own colours), flipped if ``data.augment.flip``;
    images still resized by their domain's scale, and padded where smaller
    than the crop. ``loss.masked_auxiliary`` uses ``mask_ratio`` and ``patch``
    on the universal stage's unlabelled crops, augmented as they are.
    """

    mask_ratio: float = 0.5
    patch: int = 16
    augment: str = "training"

    def validate(self, key="masked_modelling"):
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"key '{key}.mask_ratio': must be in (0, 1), got {self.mask_ratio}")
        if self.patch < 1:
            raise ConfigError(f"key '{key}.patch': must be >= 1, got {self.patch}")
        _check_choice(f"{key}.augment", self.augment, MASKED_AUGMENTATIONS)


@dataclasses.dataclass
class CentroidConfig:
    pixels_per_class: int = 2000
    refresh_every: int = 0  # universal-stage steps between centroid refreshes; 0 = never.

    def validate(self, key="centroids"):
        _check_at_least_one(key, self, ("pixels_per_class",))


@dataclasses.dataclass
class TrainConfig:
    # Steps of univ_full's masked image modelling stage, before pre-training
    # (masked_modelling); the other methods have none.
    masked_steps: int = 750
    # Steps of the method's first and second training stage (usss_tf.method.PLANS):
    # pretrain -> universal for univ_*, source -> target for finetune; a
    # supervised run trains each domain's model for their sum.
    pretrain_steps: int = 500
    steps: int = 500
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
    # float32, mixed_float16, mixed_bfloat16, or auto: bf16 on CPUs with AMX /
    # AVX512-BF16, float16 on GPUs with tensor cores, else float32 (usss_tf.precision).
    precision: str = "float32"
    # The encoder's learning rate relative to the decoders and heads (usss_tf.optimizer).
    encoder_lr_multiplier: float = 1.0
    # Keep the encoder's BatchNorm as loaded (statistics and affine): for
    # pretrained encoders trained with small batches.
    freeze_encoder_batchnorm: bool = False

    @property
    def validation_every(self):
        """Steps between validations (``eval_every``, or the checkpoint interval)."""
        return self.eval_every or self.checkpoint_every

    def validate(self, key="train"):
        _check_at_least_one(key, self, ("checkpoint_every", "log_every"))
        for name in ("masked_steps", "pretrain_steps", "steps", "eval_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"key '{key}.{name}': must be >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"key '{key}.optimizer': unknown optimizer {self.optimizer!r}; expected one "
                f"of: {', '.join(OPTIMIZERS)}"
            )
        if self.learning_rate <= 0:
            raise ConfigError(f"key '{key}.learning_rate': must be > 0")
        if self.image_every is not None and self.image_every < 0:
            raise ConfigError(f"key '{key}.image_every': must be >= 0 (0 = panels only at validations)")
        if self.panel_images < 0:
            raise ConfigError(f"key '{key}.panel_images': must be >= 0 (0 = no image panels)")
        if self.encoder_lr_multiplier < 0:
            raise ConfigError(f"key '{key}.encoder_lr_multiplier': must be >= 0 (0 = a fixed encoder)")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"key '{key}.precision': unknown precision {self.precision!r}; expected one of: "
                f"{', '.join(PRECISIONS)}"
            )


@dataclasses.dataclass
class ExperimentConfig:
    name: str = "experiment"
    method: str = "univ_full"
    seed: int = 0
    domains: typing.List[DomainConfig] = dataclasses.field(default_factory=list)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    consistency: ConsistencyConfig = dataclasses.field(default_factory=ConsistencyConfig)
    masked_modelling: MaskedModellingConfig = dataclasses.field(default_factory=MaskedModellingConfig)
    centroids: CentroidConfig = dataclasses.field(default_factory=CentroidConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self):
        for section, defaults in method_defaults(self.method).items():
            values = getattr(self, section)
            for name, value in defaults.items():
                if getattr(values, name) is None:
                    setattr(values, name, value)

    @property
    def domain_names(self):
        return [d.name for d in self.domains]

    def validate(self):
        """Checks the method against the domains, then every section; returns the config."""
        if self.method not in METHODS:
            raise ConfigError(
                f"key 'method': unknown method {self.method!r}; expected one of: {', '.join(METHODS)}"
            )
        if not self.domains:
            raise ConfigError("key 'domains': at least one domain is required")
        if self.method == "finetune" and len(self.domains) < 2:
            raise ConfigError("key 'method': 'finetune' needs at least two domains (source, then target)")
        seen = set()
        for i, domain in enumerate(self.domains):
            domain.validate(f"domains.{i}")
            if domain.name in seen:
                raise ConfigError(f"key 'domains.{i}.name': domain {domain.name!r} is listed twice")
            seen.add(domain.name)
        for section in SECTIONS:
            getattr(self, section).validate(section)
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


# Defaults that differ by method, filled in by ``ExperimentConfig`` where a
# config leaves the key unset (``None``): the paper's weights (``univ_paper``;
# the other methods have no entropy module) unless the method has its own. A
# saved ``config.yaml`` sets every key, so switching its method keeps its
# weights. ``univ_full`` learns from the unlabelled images by masked image
# modelling first; the unlabelled-pixel terms (entropy module, consistency)
# and the embedding supervision stay available but off: on the synthetic
# domains at the converged schedule the unlabelled-pixel terms cost mIoU
# against ``univ_basic``, together also after masked image modelling, and the
# embedding supervision's share was within the noise (docs/RESULTS.md). Its
# label centroids are still fitted (the embedding branch: ``embed``
# signatures, transfer by nearest centroid). It also trains each decoder on
# the other domains' labels where the classes correspond (better than without
# in every cell of the synthetic study on average; absent for domains without
# a table); the paper uses no correspondence, so the others default to 0.
PAPER_DEFAULTS = {
    "loss": {"within_entropy": 0.1, "cross_entropy": 0.1, "embedding_supervision": 1.0,
             "cross_domain_supervision": 0.0},
}
METHOD_DEFAULTS = {
    "univ_full": {
        "loss": {"within_entropy": 0.0, "cross_entropy": 0.0, "embedding_supervision": 0.0,
                 "cross_domain_supervision": 1.0},
    },
}


def method_defaults(method_name):
    """``{section: {key: value}}``: the values ``method_name`` gets for keys left unset."""
    defaults = {section: dict(values) for section, values in PAPER_DEFAULTS.items()}
    for section, values in METHOD_DEFAULTS.get(method_name, {}).items():
        defaults.setdefault(section, {}).update(values)
    return defaults


def _type_name(tp):
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


# Scientific notation without a dot (1e-4), which YAML 1.1 and so PyYAML read as a string.
_YAML11_EXPONENT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


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
        if isinstance(value, str) and _YAML11_EXPONENT.match(value):
            return float(value)  # PyYAML reads 1e-4 (no dot) as a string
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
    """Checks every section (``ExperimentConfig.validate``); raises ``ConfigError`` naming the key."""
    return config.validate()


def config_from_dict(mapping, overrides=(), source="<dict>"):
    """Builds a validated ``ExperimentConfig`` from a raw mapping plus overrides, with the
    method's defaults (``method_defaults``) where neither sets a key."""
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

# Keys added after runs were written whose default is what every earlier
# version did: a config.yaml without one resumes when the value is that default.
ADDED_WITH_EARLIER_BEHAVIOUR = {
    "masked_modelling.augment": "training",
    "loss.masked_auxiliary": 0.0,
    "loss.cross_domain_supervision": 0.0,
    "data.augment.cross_domain_colour": False,
    "data.augment.class_hue": False,
    "data.augment.class_hue_max_concentration": 0.8,
    "data.augment.class_hue_probability": 0.5,
}


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
