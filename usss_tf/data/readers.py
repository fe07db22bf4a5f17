"""Readers: list the (image, label) files of a split, one reader per layout.

Each standard dataset keeps images and labels in its own folder structure. A
reader turns ``(root, split)`` into a sorted list of `Example`s with absolute
paths, pairing every image with its label *by name* (never by zipping two
globs, which silently mis-pairs as soon as one file is missing or the file
system lists in a different order). The tf.data pipeline only ever sees these
lists; decoding happens there.

Layouts (``Domain.layout``):

- ``cityscapes``: ``root/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png``
  with ``root/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``.
- ``idd``: the Cityscapes structure; images ``{stem}_leftImg8bit.{png,jpg}``,
  labels ``{stem}_gtFine_labellevel3Ids.png`` (written by the IDD toolkit's
  ``createLabels``).
- ``camvid`` (SegNet): ``root/{split}/{name}.png`` with
  ``root/{split}annot/{name}.png``.
- ``sunrgbd``: ``root/{split}/image/{name}.{jpg,png}`` with
  ``root/{split}/label37/{name}.png`` (label values 1..37, 0 = unlabelled).

`check_example` and `find_unreadable` decode files with PIL to name the exact
file at fault, e.g. after a tf.data decode error that only says "corrupt".
"""

import dataclasses
import os
import pathlib

from PIL import Image

from usss_tf import domains as domains_lib
from usss_tf.errors import ConfigError, DatasetError

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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
    """

    key: str
    image: str
    label: str | None


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
            label = str(label)
        elif require_labels:
            raise DatasetError(f"image {images[key]} has no label: expected {label}")
        else:
            label = None
        examples.append(Example(key=key, image=str(images[key]), label=label))
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


def _cityscapes_like(root, split, *, image_suffixes, label_suffix, require_labels):
    """Lists ``leftImg8bit/{split}/{city}/`` with labels under ``gtFine/``."""
    image_split = _existing_dir(root / "leftImg8bit" / split, f"split {split!r} of {root}")
    label_split = root / "gtFine" / split
    if require_labels:
        _existing_dir(label_split, f"labels of split {split!r}")
    images = {}
    for city in sorted(p for p in image_split.iterdir() if p.is_dir()):
        files = _files_with_suffix(city, image_suffixes)
        stems = _index_by_stem(files, lambda n: _strip_suffix(n, image_suffixes), city)
        images.update({f"{city.name}/{stem}": path for stem, path in stems.items()})
    return _pair(
        images,
        lambda key: label_split / f"{key}{label_suffix}",
        image_split,
        require_labels=require_labels,
    )


def _list_cityscapes(root, split, *, require_labels):
    return _cityscapes_like(
        root,
        split,
        image_suffixes=("_leftImg8bit.png",),
        label_suffix="_gtFine_labelIds.png",
        require_labels=require_labels,
    )


def _list_idd(root, split, *, require_labels):
    return _cityscapes_like(
        root,
        split,
        image_suffixes=("_leftImg8bit.png", "_leftImg8bit.jpg"),
        label_suffix="_gtFine_labellevel3Ids.png",
        require_labels=require_labels,
    )


def _flat_pair(image_folder, label_folder, split, *, require_labels):
    """Images ``{name}.{png,jpg}`` with labels ``label_folder/{name}.png``."""
    _existing_dir(image_folder, f"images of split {split!r}")
    if require_labels:
        _existing_dir(label_folder, f"labels of split {split!r}")
    files = _files_with_suffix(image_folder, _IMAGE_SUFFIXES)
    images = _index_by_stem(files, lambda n: _strip_suffix(n, _IMAGE_SUFFIXES), image_folder)
    return _pair(
        images,
        lambda key: label_folder / f"{key}.png",
        image_folder,
        require_labels=require_labels,
    )


def _list_camvid(root, split, *, require_labels):
    return _flat_pair(root / split, root / f"{split}annot", split, require_labels=require_labels)


def _list_sunrgbd(root, split, *, require_labels):
    return _flat_pair(
        root / split / "image",
        root / split / "label37",
        split,
        require_labels=require_labels,
    )


# layout -> fn(root: absolute Path, split: str, *, require_labels) -> [Example]
_LAYOUT_READERS = {
    "cityscapes": _list_cityscapes,
    "idd": _list_idd,
    "camvid": _list_camvid,
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
        require_labels: when True every image must have a label; when False
            images without one get ``label=None`` (unlabelled data).

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


# ---------------------------------------------------------------------------
# Checking files.
# ---------------------------------------------------------------------------

# Modes PIL gives 8-bit colour or grey images; 16-bit/float ones are not photos.
_IMAGE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
# Single-channel label modes: 8-bit grey, palette indices, 16-bit grey.
_LABEL_MODES = frozenset({"L"})


def _decode(path) -> tuple:
    """Fully decodes `path` with PIL and returns ``(mode, (width, height))``.

    Raises DatasetError naming the file when it is missing or does not decode.
    """
    path = os.fspath(path)
    try:
        # verify() checks chunk checksums but leaves the image unusable, so
        # the file is opened again to decode every pixel.
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
            return image.mode, image.size
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError...
        raise DatasetError(f"cannot decode {path}: {error}") from error


def check_example(example: Example, domain=None) -> None:
    """Decodes one example's files and checks they can be trained on.

    Unknown raw ids in the label are legal (they map to ignore), so only the
    files themselves are checked: both decode completely, the image converts
    to RGB, the label has one channel, and both have the same size.

    Args:
        example: the `Example` to check.
        domain: optional `Domain` or name, only used to make messages say
            which dataset the file belongs to.

    Raises:
        DatasetError: naming the file at fault.
    """
    where = ""
    if domain is not None:
        where = f" (domain {domains_lib.get_domain(domain).name!r})"
    image_mode, image_size = _decode(example.image)
    if image_mode not in _IMAGE_MODES:
        raise DatasetError(
            f"image {example.image}{where} has mode {image_mode!r}, which does "
            "not convert to 8-bit RGB"
        )
    if example.label is None:
        return
    label_mode, label_size = _decode(example.label)
    if label_mode not in _LABEL_MODES:
        raise DatasetError(
            f"label {example.label}{where} has mode {label_mode!r}; expected a "
            "8-bit greyscale image (mode L) of raw ids; palette and 16-bit labels are "
            "not read correctly by the pipeline, convert them first"
        )
    if image_size != label_size:
        raise DatasetError(
            f"image and label sizes differ{where}: {example.image} is "
            f"{image_size[0]}x{image_size[1]}, {example.label} is "
            f"{label_size[0]}x{label_size[1]} (width x height)"
        )


def find_unreadable(paths) -> list:
    """Returns ``[(path, reason), ...]`` for files PIL cannot fully decode.

    Used after a tf.data decode failure to name the culprit. `paths` may be
    str, `os.PathLike` or bytes (as they come out of a tf.string tensor).
    """
    unreadable = []
    for path in paths:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        path = os.fspath(path)
        try:
            _decode(path)
        except DatasetError as error:
            unreadable.append((path, str(error)))
    return unreadable
