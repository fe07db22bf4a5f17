"""Readers: list the (image, label) files of a split, one reader per layout.

Each standard dataset keeps images and labels in its own folder structure. A
reader turns ``(root, split)`` into a sorted list of `Example`s with absolute
paths, pairing every image with its label *by name* (never by zipping two
globs, which silently mis-pairs as soon as one file is missing or the file
system lists in a different order). The tf.data pipeline only ever sees these
lists; decoding happens there.

Layouts (``Domain.layout``) are defined in ``usss_tf.data.layouts``:
``cityscapes``, ``idd``, ``camvid`` (SegNet) and ``sunrgbd``. SUN RGB-D comes
either as a list file ``root/{split}37.txt`` (one example per line: ``image
label`` or ``image depth label``, paths relative to root; the form of
ankurhanda/sunrgbd-meta-data and chrischoy/SUN_RGBD, whose image and label
names differ, so only the list pairs them) or, without a list file, as
folders. Label values 1..37, 0 = unlabelled.

Readers only list; whether the files are usable (they decode, sizes agree,
label ids belong to the domain) is `usss_tf.data.checks`' job. With
``require_labels=False`` a reader lists an image whose label is absent with
``label=None`` and ``missing_label`` set to where it looked, so the checks can
report (or skip) it by name.
"""

import dataclasses
import functools
import os
import pathlib

from usss_tf import domains as domains_lib
from usss_tf.data import layouts
from usss_tf.errors import ConfigError, DatasetError


@dataclasses.dataclass(frozen=True)
class Example:
    """One image and its label file.

    Attributes:
        key: stable id, unique within a split, e.g.
            ``"aachen/aachen_000000_000019"`` or a CamVid file stem. Sorting,
            seeded subset draws and manifests use it.
        image: absolute path of the image.
        label: absolute path of the label image, or None when the split is
            read with ``require_labels=False`` and this image has none.
        missing_label: when ``label`` is None because the file is absent, the
            path the reader expected it at (for messages). Not part of
            equality.
        origin: where the example was listed, e.g. ``"/data/sun/train37.txt:12"``
            for list files, so messages can point at the line. Not part of
            equality.
    """

    key: str
    image: str
    label: str | None
    missing_label: str | None = dataclasses.field(default=None, compare=False)
    origin: str | None = dataclasses.field(default=None, compare=False)


# ---------------------------------------------------------------------------
# Listing.
# ---------------------------------------------------------------------------


def _existing_dir(path: pathlib.Path, what: str) -> pathlib.Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: expected folder {path}")
    return path


def _files_with_suffix(folder: pathlib.Path, suffixes) -> list:
    """Regular, non-hidden files in `folder` whose name ends in a suffix.

    Suffixes match case-insensitively (``.PNG`` and ``.png`` alike).
    """
    suffixes = tuple(suffix.lower() for suffix in suffixes)
    return [
        entry
        for entry in folder.iterdir()
        if not entry.name.startswith(".")
        and entry.name.lower().endswith(suffixes)
        and entry.is_file()
    ]


def _pair(images: dict, label_for_key, image_folder, *, require_labels) -> list:
    """Pairs `{key: image_path}` with labels found by name.

    `label_for_key(key)` returns the path the label of `key` must have.
    """
    if not images:
        raise DatasetError(f"no images found in {image_folder}")
    examples = []
    for key in sorted(images):
        label = label_for_key(key)
        if label.is_file():
            examples.append(Example(key=key, image=str(images[key]), label=str(label)))
        elif require_labels:
            raise DatasetError(f"image {images[key]} has no label: expected {label}")
        else:
            examples.append(
                Example(key=key, image=str(images[key]), label=None, missing_label=str(label))
            )
    return examples


def _index_by_stem(files, stem_of, folder) -> dict:
    """Maps `stem -> path`; two files with the same stem are an error."""
    index = {}
    for path in files:
        stem = stem_of(path.name)
        if stem is None:
            continue
        if stem in index:
            raise DatasetError(
                f"two images with the same name in {folder}: {index[stem].name} and {path.name}"
            )
        index[stem] = path
    return index


def _strip_suffix(name: str, suffixes):
    """`name` without the first matching suffix (case-insensitive), else None."""
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix.lower()):
            return name[: -len(suffix)]
    return None


def _list_grouped(layout, root, split, *, require_labels):
    """Lists a ``GroupedLayout``: one image folder per group, labels in a parallel tree."""
    image_split = _existing_dir(layout.image_dir(root, split), f"split {split!r} of {root}")
    if require_labels:
        _existing_dir(layout.label_dir(root, split), f"labels of split {split!r}")
    suffixes = layout.image_suffixes
    images = {}
    for group in sorted(p for p in image_split.iterdir() if p.is_dir()):
        files = _files_with_suffix(group, suffixes)
        stems = _index_by_stem(files, lambda n: _strip_suffix(n, suffixes), group)
        images.update({f"{group.name}/{stem}": path for stem, path in stems.items()})
    return _pair(
        images,
        lambda key: layout.label_path(root, split, key),
        image_split,
        require_labels=require_labels,
    )


def _list_flat(layout, root, split, *, require_labels):
    """Lists a ``FlatLayout``: images ``{name}.{png,jpg}``, labels of the same name."""
    image_folder = _existing_dir(layout.image_dir(root, split), f"images of split {split!r}")
    if require_labels:
        _existing_dir(layout.label_dir(root, split), f"labels of split {split!r}")
    suffixes = layout.image_suffixes
    files = _files_with_suffix(image_folder, suffixes)
    images = _index_by_stem(files, lambda n: _strip_suffix(n, suffixes), image_folder)
    return _pair(
        images,
        lambda key: layout.label_path(root, split, key),
        image_folder,
        require_labels=require_labels,
    )


def _list_sunrgbd(root, split, *, require_labels):
    list_file = root / layouts.SUNRGBD_LIST_FILE.format(split=split)
    if list_file.is_file():
        return _from_list_file(root, list_file, layouts.SUNRGBD_LABEL_FOLDER,
                               require_labels=require_labels)
    return _list_flat(layouts.SUNRGBD, root, split, require_labels=require_labels)


def _list_path(root, text) -> pathlib.Path:
    """A path from a list file: absolute as written, else relative to `root`."""
    path = pathlib.Path(text)
    return path if path.is_absolute() else root / path


def _from_list_file(root, list_file, label_folder, *, require_labels) -> list:
    """Examples listed one per line in `list_file`: ``image [depth] label``.

    Two columns are ``image label``; three are ``image depth label`` (depth is
    not used). Blank lines and lines starting with ``#`` are skipped. A label
    given as a bare file name, as in chrischoy/SUN_RGBD's top-level
    ``train37.txt``, lives in ``root/{label_folder}/{the image's folder name}/``.
    Keys are image paths relative to `root` without the suffix.

    Raises:
        DatasetError: naming ``list_file:line`` for a malformed line, an image
            listed twice, a missing image, or (with `require_labels`) a
            missing label.
    """
    examples, seen = [], {}
    lines = list_file.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        where = f"{list_file}:{number}"
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (2, 3):
            raise DatasetError(
                f"{where}: expected 'image label' or 'image depth label' (2 or 3 paths), "
                f"got {len(fields)} fields"
            )
        image, label = _list_path(root, fields[0]), _list_path(root, fields[-1])
        if "/" not in fields[-1] and not label.is_file():
            label = root / label_folder / image.parent.name / fields[-1]
        try:
            key = image.relative_to(root).with_suffix("").as_posix()
        except ValueError:  # an absolute path outside root
            key = image.with_suffix("").as_posix().lstrip("/")
        if key in seen:
            raise DatasetError(f"{where}: image {image} is already listed on line {seen[key]}")
        seen[key] = number
        if require_labels and not image.is_file():
            raise DatasetError(f"{where}: image not found: {image}")
        if label.is_file():
            examples.append(Example(key, str(image), str(label), origin=where))
        elif require_labels:
            raise DatasetError(f"{where}: label not found: {label} (image {image})")
        else:
            examples.append(Example(key, str(image), None, missing_label=str(label), origin=where))
    if not examples:
        raise DatasetError(f"no examples listed in {list_file}")
    return sorted(examples, key=lambda e: e.key)


# layout -> fn(root: absolute Path, split: str, *, require_labels) -> [Example]
_LAYOUT_READERS = {
    "cityscapes": functools.partial(_list_grouped, layouts.CITYSCAPES),
    "idd": functools.partial(_list_grouped, layouts.IDD),
    "camvid": functools.partial(_list_flat, layouts.CAMVID),
    "sunrgbd": _list_sunrgbd,
}


def register_layout(layout: str, reader, *, overwrite: bool = False):
    """Adds a reader for a new on-disk layout.

    Args:
        layout: the name a `Domain.layout` refers to.
        reader: ``reader(root, split, *, require_labels) -> list[Example]``;
            `root` is an absolute `pathlib.Path` that exists. It must pair by
            name, sort by key and raise `DatasetError` naming the path at
            fault, as the built-in readers do.
        overwrite: replace an existing reader for `layout`.
    """
    if layout in _LAYOUT_READERS and not overwrite:
        raise ConfigError(
            f"layout {layout!r} already has a reader; pass overwrite=True to replace it"
        )
    _LAYOUT_READERS[layout] = reader


def supported_layouts() -> list:
    return sorted(_LAYOUT_READERS)


def list_examples(domain, root, split, *, require_labels=True) -> list:
    """Lists the examples of one split of a dataset on disk.

    Args:
        domain: a `Domain` or registered domain name; its `layout` picks the
            reader.
        root: the dataset's top folder (e.g. the one holding ``leftImg8bit/``).
        split: split name, e.g. ``"train"`` or ``"val"``.
        require_labels: when True every image must have a label (and, for
            list files, every listed file must exist); when False images
            without one get ``label=None`` and ``missing_label`` (unlabelled
            data, or a broken example for `usss_tf.data.checks` to report).

    Returns:
        `Example`s sorted by key, with absolute paths.

    Raises:
        DatasetError: the root or split folder is missing, the split has no
            images, or (with `require_labels`) an image has no label.
    """
    domain = domains_lib.get_domain(domain)
    reader = _LAYOUT_READERS.get(domain.layout)
    if reader is None:
        raise ConfigError(
            f"domain {domain.name!r} has layout {domain.layout!r}, which has no "
            f"reader; known layouts: {', '.join(supported_layouts())}"
        )
    if (
        not isinstance(split, str)
        or not split
        or split in (".", "..")
        or ("/" in split or os.sep in split)
    ):
        raise ConfigError(f"split must be a plain folder name like 'train', got {split!r}")
    root = pathlib.Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(f"dataset root of domain {domain.name!r} not found: {root}")
    return reader(root, split, require_labels=require_labels)
