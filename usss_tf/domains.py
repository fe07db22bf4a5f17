"""Domains: label spaces, palettes and raw-id -> train-id maps.

A *domain* is one visual world with its own label space: Cityscapes, CamVid,
IDD, SUN RGB-D, or one of the built-in synthetic worlds. Everything that has to
agree about a domain's classes (readers, the tf.data pipeline, the decoder
heads, metrics, TensorBoard panels, the serving signatures) looks it up here by
name, so a label space is defined exactly once.

Label images on disk hold *raw* ids in the dataset's own numbering (Cityscapes
``labelIds``, CamVid SegNet ids, ...). ``Domain.lookup_table()`` turns them into
contiguous *train* ids ``0 .. num_classes - 1``; every raw id that is not listed
becomes ``IGNORE_LABEL`` and is left out of losses and metrics.

A domain also says which raw ids its labels may *legitimately* contain without
training on them (``void_ids``: Cityscapes' 15 void labelIds, CamVid's 11,
SUN RGB-D's 0). ``known_raw_ids()`` = mapped ids + void ids + ``IGNORE_LABEL``;
a label holding any other value is from a different label space or corrupt,
and the dataset checks (``usss_tf.data.checks``) report it instead of letting
``lookup_table`` silently turn it into ignore.

Example:

>>> domain = get_domain("cityscapes")
>>> domain.num_classes
19
>>> int(domain.lookup_table()[26])  # raw "car"
13
"""

import dataclasses
import re

import numpy as np
from cityscapesscripts.helpers import labels as cityscapes_labels

from usss_tf.errors import ConfigError, UnknownDomainError

# Domains that can come from TensorFlow Datasets (``source: tfds``) -> builder/config.
TFDS_BUILDERS = {"cityscapes": "cityscapes/semantic_segmentation"}

IGNORE_LABEL = 255

# Domain names become parts of file names, TensorBoard tags and serving
# signature names (`segment_<domain>`), so they stay identifier-like.
_DOMAIN_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Domain:
    """One label space and the on-disk layout its data comes in.

    Attributes:
        name: registry key, lower-case identifier (e.g. ``"cityscapes"``).
        layout: on-disk layout the data reader understands: ``"cityscapes"``,
            ``"camvid"``, ``"idd"`` or ``"sunrgbd"``.
        class_names: class names in train-id order.
        palette: one ``(r, g, b)`` colour per class, for visualisation.
        raw_to_train: ``((raw_id, train_id), ...)``. Raw ids not listed map to
            ``IGNORE_LABEL``; a train id may also be ``IGNORE_LABEL`` to make
            an explicit entry.
        synthetic: whether the data comes from the built-in generator.
        description: one line for humans (CLI listings, exported assets).
        void_ids: raw ids that occur in the dataset's labels but belong to no
            class (they map to ``IGNORE_LABEL`` like every unlisted id); with
            ``raw_to_train`` they define the ids a valid label may hold.
    """

    name: str
    layout: str
    class_names: tuple
    palette: tuple
    raw_to_train: tuple
    synthetic: bool = False
    description: str = ""
    void_ids: tuple = ()

    def __post_init__(self):
        # Freeze list inputs (e.g. from JSON/YAML) into tuples so the domain
        # stays hashable and immutable.
        try:
            freeze = {
                "class_names": tuple(str(n) for n in self.class_names),
                "palette": tuple(tuple(int(c) for c in rgb) for rgb in self.palette),
                "raw_to_train": tuple((int(raw), int(train)) for raw, train in self.raw_to_train),
                "void_ids": tuple(sorted({int(raw) for raw in self.void_ids})),
            }
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"domain {self.name!r}: class_names, palette and raw_to_train must be "
                f"sequences (of (r, g, b) and (raw_id, train_id) pairs): {error}"
            ) from None
        for key, value in freeze.items():
            object.__setattr__(self, key, value)
        self._validate()

    def _validate(self):
        where = f"domain {self.name!r}"
        if not isinstance(self.name, str) or not _DOMAIN_NAME_PATTERN.match(self.name):
            raise ConfigError(
                f"{where}: name must be lower-case letters, digits and '_', starting with a letter"
            )
        if not isinstance(self.layout, str) or not self.layout:
            raise ConfigError(f"{where}: layout must be a non-empty string")
        num_classes = len(self.class_names)
        if not 1 <= num_classes < IGNORE_LABEL:
            raise ConfigError(
                f"{where}: needs between 1 and {IGNORE_LABEL - 1} classes, got {num_classes}"
            )
        if len(set(self.class_names)) != num_classes:
            duplicates = sorted({n for n in self.class_names if self.class_names.count(n) > 1})
            raise ConfigError(f"{where}: duplicate class names {duplicates}")
        if len(self.palette) != num_classes:
            raise ConfigError(
                f"{where}: palette has {len(self.palette)} colours for {num_classes} classes"
            )
        for class_name, rgb in zip(self.class_names, self.palette):
            if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                raise ConfigError(
                    f"{where}: colour of class {class_name!r} must be three "
                    f"values in 0..255, got {rgb}"
                )
        seen_raw = set()
        for raw, train in self.raw_to_train:
            if not 0 <= raw <= 255:
                raise ConfigError(f"{where}: raw id {raw} is outside 0..255")
            if raw in seen_raw:
                raise ConfigError(f"{where}: raw id {raw} is mapped twice")
            seen_raw.add(raw)
            if not (0 <= train < num_classes or train == IGNORE_LABEL):
                raise ConfigError(
                    f"{where}: raw id {raw} maps to train id {train}, expected "
                    f"0..{num_classes - 1} or {IGNORE_LABEL}"
                )
        for raw in self.void_ids:
            if not 0 <= raw <= 255:
                raise ConfigError(f"{where}: void id {raw} is outside 0..255")
            if raw in seen_raw:
                raise ConfigError(f"{where}: raw id {raw} is both mapped and void")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def lookup_table(self) -> np.ndarray:
        """Returns ``uint8[256]``: raw id -> train id, ``IGNORE_LABEL`` elsewhere."""
        table = np.full(256, IGNORE_LABEL, dtype=np.uint8)
        for raw, train in self.raw_to_train:
            table[raw] = train
        return table

    def known_raw_ids(self) -> np.ndarray:
        """Returns ``bool[256]``: True for the raw ids a label of this domain may hold.

        Those are the mapped ids, the void ids and ``IGNORE_LABEL``; any other
        value means the label does not belong to this label space.
        """
        known = np.zeros(256, dtype=bool)
        known[[raw for raw, _ in self.raw_to_train]] = True
        known[list(self.void_ids)] = True
        known[IGNORE_LABEL] = True
        return known

    def colorize(self, train_ids) -> np.ndarray:
        """Paints train ids with the palette: ``[...]`` -> ``uint8 [..., 3]``.

        Ignore (and any other id outside ``0 .. num_classes - 1``) is black, so
        a prediction panel and its ground truth can be compared side by side.
        """
        train_ids = np.asarray(train_ids)
        if not np.issubdtype(train_ids.dtype, np.integer):
            raise TypeError(
                f"domain {self.name!r}: colorize expects integer train ids, "
                f"got dtype {train_ids.dtype}"
            )
        palette = np.asarray(self.palette, dtype=np.uint8)
        known = (train_ids >= 0) & (train_ids < self.num_classes)
        colors = palette[np.where(known, train_ids, 0)]
        colors[~known] = 0
        return colors

    def get_config(self) -> dict:
        """JSON/YAML-friendly dict; ``Domain.from_config`` inverts it."""
        return {
            "name": self.name,
            "layout": self.layout,
            "class_names": list(self.class_names),
            "palette": [list(rgb) for rgb in self.palette],
            "raw_to_train": [list(pair) for pair in self.raw_to_train],
            "synthetic": self.synthetic,
            "description": self.description,
            "void_ids": list(self.void_ids),
        }

    @classmethod
    def from_config(cls, config: dict) -> "Domain":
        field_names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - field_names)
        if unknown:
            raise ConfigError(
                f"domain {config.get('name', '?')!r}: unknown keys {unknown}; "
                f"expected some of {sorted(field_names)}"
            )
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in config
        )
        if missing:
            raise ConfigError(f"domain {config.get('name', '?')!r}: missing keys {missing}")
        return cls(**config)


_REGISTRY: dict = {}


def register_domain(domain: Domain, *, overwrite: bool = False) -> Domain:
    """Adds `domain` to the registry under `domain.name` and returns it.

    Registering a second domain under a taken name is an error unless
    `overwrite=True`, so two label spaces never silently share a name.
    """
    if not isinstance(domain, Domain):
        raise TypeError(f"register_domain expects a Domain, got {type(domain).__name__}")
    if domain.name in _REGISTRY and not overwrite:
        raise ConfigError(
            f"domain {domain.name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[domain.name] = domain
    return domain


def get_domain(name) -> Domain:
    """Returns the registered domain called `name` (a `Domain` passes through)."""
    if isinstance(name, Domain):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownDomainError(
            f"unknown domain {name!r}; registered domains: {', '.join(registered_domains())}"
        ) from None


def registered_domains() -> list:
    """Names of all registered domains, sorted."""
    return sorted(_REGISTRY)


# ---------------------------------------------------------------------------
# Built-in domains.
# ---------------------------------------------------------------------------


def _cityscapes_domain() -> Domain:
    # The official table: the 19 labels with trainId 0..18, in trainId order.
    labels = sorted(
        (label for label in cityscapes_labels.labels if 0 <= label.trainId < IGNORE_LABEL),
        key=lambda label: label.trainId,
    )
    return Domain(
        name="cityscapes",
        layout="cityscapes",
        class_names=tuple(label.name for label in labels),
        palette=tuple(label.color for label in labels),
        raw_to_train=tuple((label.id, label.trainId) for label in labels),
        void_ids=_cityscapes_void_ids(labels),
        description="Cityscapes fine annotations: 34 labelIds -> 19 train ids.",
    )


def _cityscapes_void_ids(used_labels) -> tuple:
    """The labelIds 0..33 that are not among `used_labels` (license plate, -1, is never written)."""
    used = {label.id for label in used_labels}
    return tuple(
        label.id for label in cityscapes_labels.labels if label.id >= 0 and label.id not in used
    )


# SegNet's 11-class CamVid (Badrinarayanan et al.), id 11 = void.
_CAMVID_CLASSES = (
    ("sky", (128, 128, 128)),
    ("building", (128, 0, 0)),
    ("pole", (192, 192, 128)),
    ("road", (128, 64, 128)),
    ("pavement", (60, 40, 222)),
    ("tree", (128, 128, 0)),
    ("sign symbol", (192, 128, 128)),
    ("fence", (64, 64, 128)),
    ("car", (64, 0, 128)),
    ("pedestrian", (64, 64, 0)),
    ("bicyclist", (0, 128, 192)),
)

# IDD level-3 ids 0..25 (AutoNUE `anue_labels.py`). Each level-3 class groups
# some level-4 labels; the name and colour are those of its main member.
_IDD_LEVEL3_CLASSES = (
    ("road", (128, 64, 128)),
    ("drivable fallback", (81, 0, 81)),  # + parking
    ("sidewalk", (244, 35, 232)),
    ("non-drivable fallback", (152, 251, 152)),  # + rail track
    ("person", (220, 20, 60)),  # + animal
    ("rider", (255, 0, 0)),
    ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
    ("autorickshaw", (255, 204, 54)),
    ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)),
    ("bus", (0, 60, 100)),
    ("vehicle fallback", (136, 143, 153)),  # + caravan, trailer, train
    ("curb", (220, 190, 40)),
    ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)),
    ("guard rail", (180, 165, 180)),
    ("billboard", (174, 64, 67)),
    ("traffic sign", (220, 220, 0)),
    ("traffic light", (250, 170, 30)),
    ("pole", (153, 153, 153)),  # + polegroup
    ("obs-str-bar-fallback", (169, 187, 214)),
    ("building", (70, 70, 70)),
    ("bridge", (150, 100, 100)),  # + tunnel
    ("vegetation", (107, 142, 35)),
    ("sky", (70, 130, 180)),  # + fallback background
)

# The 37-class SUN RGB-D benchmark; label PNGs hold 1..37, 0 = unlabelled.
_SUNRGBD_CLASSES = (
    ("wall", (119, 119, 119)),
    ("floor", (244, 243, 131)),
    ("cabinet", (137, 28, 157)),
    ("bed", (150, 255, 255)),
    ("chair", (54, 114, 113)),
    ("sofa", (0, 0, 176)),
    ("table", (255, 69, 0)),
    ("door", (87, 112, 255)),
    ("window", (0, 163, 33)),
    ("bookshelf", (255, 150, 255)),
    ("picture", (255, 180, 10)),
    ("counter", (101, 70, 86)),
    ("blinds", (38, 230, 0)),
    ("desk", (255, 120, 70)),
    ("shelves", (117, 41, 121)),
    ("curtain", (150, 255, 0)),
    ("dresser", (132, 0, 255)),
    ("pillow", (24, 209, 255)),
    ("mirror", (191, 130, 35)),
    ("floor mat", (219, 200, 109)),
    ("clothes", (154, 62, 86)),
    ("ceiling", (255, 190, 190)),
    ("books", (255, 0, 255)),
    ("fridge", (152, 163, 55)),
    ("tv", (192, 79, 212)),
    ("paper", (230, 230, 230)),
    ("towel", (53, 130, 64)),
    ("shower curtain", (155, 249, 152)),
    ("box", (87, 64, 34)),
    ("whiteboard", (214, 209, 175)),
    ("person", (170, 0, 59)),
    ("night stand", (255, 0, 0)),
    ("toilet", (193, 195, 234)),
    ("sink", (70, 72, 115)),
    ("lamp", (255, 255, 0)),
    ("bathtub", (52, 57, 131)),
    ("bag", (12, 83, 45)),
)


def _table_domain(
    name, layout, classes, *, first_raw_id, description, synthetic=False, void_ids=()
) -> Domain:
    """A domain whose raw ids are its train ids shifted by `first_raw_id`."""
    return Domain(
        name=name,
        layout=layout,
        class_names=tuple(n for n, _ in classes),
        palette=tuple(c for _, c in classes),
        raw_to_train=tuple((i + first_raw_id, i) for i in range(len(classes))),
        synthetic=synthetic,
        description=description,
        void_ids=void_ids,
    )


# The synthetic scene grammar draws these 10 classes; each synthetic domain
# writes them in its own raw ids and label space (see usss_tf.data.synthetic).
SYNTH_CITY_CLASSES = (
    "road", "sidewalk", "building", "fence", "pole",
    "vegetation", "sky", "person", "car", "truck",
)  # fmt: skip

# synth_camvid: a smaller, CamVid-style label space. Car and truck are merged
# into "vehicle"; fence and pole have no class (their pixels are void, id 11).
SYNTH_CAMVID_CLASSES = (
    ("sky", (128, 128, 128)),
    ("building", (128, 0, 0)),
    ("road", (128, 64, 128)),
    ("pavement", (60, 40, 222)),
    ("tree", (128, 128, 0)),
    ("vehicle", (64, 0, 128)),
    ("pedestrian", (64, 64, 0)),
)
SYNTH_CAMVID_VOID = 11

# synth_idd: an IDD-style label space of 8 classes in level-3 order; the
# scene's trucks are "large vehicle", fence and pole pixels are void (255).
SYNTH_IDD_CLASSES = (
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("person", (220, 20, 60)),
    ("car", (0, 0, 142)),
    ("large vehicle", (0, 60, 100)),
    ("building", (70, 70, 70)),
    ("vegetation", (107, 142, 35)),
    ("sky", (70, 130, 180)),
)
SYNTH_IDD_VOID = 255


def _synth_city_domain() -> Domain:
    # Raw ids are real Cityscapes labelIds; train ids are compact 0..9.
    labels = [cityscapes_labels.name2label[n] for n in SYNTH_CITY_CLASSES]
    return Domain(
        name="synth_city",
        layout="cityscapes",
        class_names=SYNTH_CITY_CLASSES,
        palette=tuple(label.color for label in labels),
        raw_to_train=tuple((label.id, i) for i, label in enumerate(labels)),
        void_ids=_cityscapes_void_ids(labels),
        synthetic=True,
        description=(
            "Synthetic street scenes, cool daylight, Cityscapes layout and labelIds, 10 classes."
        ),
    )


def _builtin_domains():
    yield _cityscapes_domain()
    yield _table_domain(
        "camvid",
        "camvid",
        _CAMVID_CLASSES,
        first_raw_id=0,
        void_ids=(11,),
        description="CamVid, SegNet layout: 11 classes, id 11 = void.",
    )
    yield _table_domain(
        "idd",
        "idd",
        _IDD_LEVEL3_CLASSES,
        first_raw_id=0,
        # createLabels writes 255 for unlabelled, ego vehicle, etc.: IGNORE_LABEL itself.
        description="India Driving Dataset, level-3 ids: 26 classes.",
    )
    yield _table_domain(
        "sunrgbd",
        "sunrgbd",
        _SUNRGBD_CLASSES,
        first_raw_id=1,
        void_ids=(0,),
        description="SUN RGB-D indoor scenes: 37 classes, raw 0 = unlabelled.",
    )
    yield _synth_city_domain()
    yield _table_domain(
        "synth_camvid",
        "camvid",
        SYNTH_CAMVID_CLASSES,
        first_raw_id=0,
        synthetic=True,
        void_ids=(SYNTH_CAMVID_VOID,),
        description=(
            "Synthetic street scenes, warm evening light, CamVid layout, "
            "7 classes (vehicle = car + truck; fence, pole = void)."
        ),
    )
    yield _table_domain(
        "synth_idd",
        "idd",
        SYNTH_IDD_CLASSES,
        first_raw_id=0,
        synthetic=True,
        void_ids=(SYNTH_IDD_VOID,),
        description=(
            "Synthetic street scenes, hazy dusty noon, IDD layout, 8 classes "
            "(large vehicle = truck; fence, pole = void). A third style, e.g. to pretrain an encoder."
        ),
    )


for _domain in _builtin_domains():
    register_domain(_domain)
del _domain
