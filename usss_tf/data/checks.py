"""Dataset checks: find, by file name, the examples a run cannot use.

A dataset can be present and still broken: an image without its label, a
label of another size than its image, a label holding ids that are not in the
domain's label space (a ``*_color.png`` or a trainIds file where labelIds were
expected, another dataset's labels), a truncated or corrupt file. tf.data would
either fail mid-run with a message that names no file, or — for foreign ids —
silently train on ignore. These checks run before training and name the file.

Two depths, because reading every pixel of a large dataset at every start (and
resume) costs minutes:

- *header*: open the file and read its header (format, mode, size). Finds
  missing files, files that are no image, unusable modes (palette or 16-bit
  labels, float images), image/label size mismatches and missing labels.
  About 0.2 ms per file whatever its size.
- *full*: decode every pixel (PIL ``verify`` + ``load``), and for labels count
  the raw ids (``Image.histogram``). Also finds truncated or corrupt pixel
  data and ids outside ``Domain.known_raw_ids()``. About 100 ms for a
  2048x1024 RGB PNG and 15-20 ms for its label on one core.

`usss_tf.data.sources` applies *header* to every example it lists (train and
val, image and label: every train example is a candidate of the labelled
draw), and *full* to the labelled subset (images and labels) and to the
validation labels. Unlabelled and validation images stay at header depth: a
truncated pixel body there still stops tf.data, and the run then names the
file (`find_unreadable`). Files are checked on a small thread pool (PIL
releases the GIL while it inflates).
"""

import concurrent.futures
import dataclasses
import os

import numpy as np
from PIL import Image

from usss_tf import domains as domains_lib
from usss_tf.errors import DatasetError

# Modes PIL gives 8-bit colour or grey images; 16-bit/float ones are not photos.
_IMAGE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
# Labels are read with decode_png(channels=1): only 8-bit grey keeps raw ids intact.
_LABEL_MODES = frozenset({"L"})
_MAX_WORKERS = 8


@dataclasses.dataclass(frozen=True)
class Broken:
    """One example a check rejected.

    Attributes:
        split: the split it was listed in.
        key: its `Example.key`.
        file: the file at fault (image or label path).
        reason: a message that names the file and says what is wrong.
    """

    split: str
    key: str
    file: str
    reason: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class _Fault(Exception):
    """A check failed on `path`; the message names it."""

    def __init__(self, path, message):
        super().__init__(message)
        self.path = os.fspath(path)


# -- one file -----------------------------------------------------------------------


def _header(path) -> tuple:
    """``(mode, (width, height))`` from the file's header, without decoding pixels."""
    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except FileNotFoundError:
        raise _Fault(path, f"file not found: {path}") from None
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
        raise _Fault(path, f"cannot read {path}: {error}") from None


def _decode(path, histogram=False) -> tuple:
    """Fully decodes `path`; returns ``(mode, size, histogram or None)``."""
    try:
        # verify() checks chunk checksums but leaves the image unusable, so
        # the file is opened again to decode every pixel.
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
            counts = image.histogram() if histogram and image.mode in _LABEL_MODES else None
            return image.mode, image.size, counts
    except FileNotFoundError:
        raise _Fault(path, f"file not found: {path}") from None
    except Exception as error:
        raise _Fault(path, f"cannot decode {path}: {error}") from None


def _id_ranges(ids) -> str:
    """``[0, 1, 2, 3, 7, 255]`` -> ``"0-3, 7, 255"``."""
    ids, parts, start = sorted(ids), [], None
    for i, value in enumerate(ids):
        if start is None:
            start = value
        if i + 1 == len(ids) or ids[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)


def _fault(example, domain, *, decode_image, decode_label, need_label):
    """Checks one example; returns the first `_Fault`, or None when it is usable."""
    where = f" (domain {domain.name!r})" if domain is not None else ""
    listed = f" (listed at {example.origin})" if example.origin else ""
    try:
        if decode_image:
            image_mode, image_size, _ = _decode(example.image)
        else:
            image_mode, image_size = _header(example.image)
        if image_mode not in _IMAGE_MODES:
            raise _Fault(
                example.image,
                f"image {example.image}{where} has mode {image_mode!r}, which does not "
                "convert to 8-bit RGB",
            )
        if example.label is None:
            if need_label:
                expected = f": expected {example.missing_label}" if example.missing_label else ""
                raise _Fault(example.image, f"image {example.image}{where} has no label{expected}")
            return None
        counts = None
        if decode_label:
            label_mode, label_size, counts = _decode(example.label, histogram=domain is not None)
        else:
            label_mode, label_size = _header(example.label)
        if label_mode not in _LABEL_MODES:
            raise _Fault(
                example.label,
                f"label {example.label}{where} has mode {label_mode!r}; expected a 8-bit "
                "greyscale image (mode L) of raw ids; palette and 16-bit labels are not read "
                "correctly by the pipeline, convert them first",
            )
        if image_size != label_size:
            raise _Fault(
                example.label,
                f"image and label sizes differ{where}: {example.image} is "
                f"{image_size[0]}x{image_size[1]}, {example.label} is "
                f"{label_size[0]}x{label_size[1]} (width x height)",
            )
        if counts is not None:
            present = np.asarray(counts) > 0
            unknown = np.flatnonzero(present & ~domain.known_raw_ids()).tolist()
            if unknown:
                raise _Fault(
                    example.label,
                    f"label {example.label} holds raw ids {_id_ranges(unknown)} that domain "
                    f"{domain.name!r} does not define (its ids: "
                    f"{_id_ranges(np.flatnonzero(domain.known_raw_ids()).tolist())}); "
                    "is it a label of another kind (color, trainIds) or another dataset?",
                )
    except _Fault as fault:
        if listed:
            fault.args = (fault.args[0] + listed,)
        return fault
    return None


def check_example(example, domain=None) -> None:
    """Fully decodes one example's files and checks they can be trained on.

    Both files decode completely, the image converts to RGB, the label is
    8-bit grey and has the image's size, and — when `domain` is given — the
    label holds only raw ids of that domain (`Domain.known_raw_ids`).

    Args:
        example: the `readers.Example` to check; ``label=None`` checks the
            image alone.
        domain: optional `Domain` or registered name.

    Raises:
        DatasetError: naming the file at fault.
    """
    domain = domains_lib.get_domain(domain) if domain is not None else None
    fault = _fault(example, domain, decode_image=True, decode_label=True, need_label=False)
    if fault is not None:
        raise DatasetError(str(fault))


# -- many examples ------------------------------------------------------------------


def _map(function, items):
    """``[function(item) ...]`` in order, on a few threads when there is work for them."""
    items = list(items)
    workers = min(_MAX_WORKERS, os.cpu_count() or 1, len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


def find_broken(
    examples, domain, split, *, decode_images=False, decode_labels=False, need_labels=True
) -> list:
    """Checks `examples` and returns a `Broken` for each unusable one, in input order.

    Args:
        examples: `readers.Example`s of one split of `domain`.
        domain: `Domain` or registered name (label ids are checked against it
            when labels are decoded).
        split: split name, recorded in each `Broken`.
        decode_images: decode image pixels (*full*) instead of reading headers.
        decode_labels: decode label pixels and check their ids.
        need_labels: an example without a label is broken (labelled splits).
    """
    domain = domains_lib.get_domain(domain)

    def check(example):
        return _fault(
            example, domain,
            decode_image=decode_images, decode_label=decode_labels, need_label=need_labels,
        )

    broken = []
    for example, fault in zip(examples, _map(check, examples)):
        if fault is not None:
            broken.append(Broken(split, example.key, fault.path, str(fault)))
    return broken


def describe(broken, limit=5) -> str:
    """The reasons of the first `limit` `Broken`s, and how many more there are."""
    shown = "; ".join(b.reason for b in broken[:limit])
    more = f"; and {len(broken) - limit} more" if len(broken) > limit else ""
    return shown + more


def find_unreadable(paths) -> list:
    """Returns ``[(path, reason), ...]`` for files PIL cannot fully decode.

    Used after a tf.data decode failure to name the culprit. `paths` may be
    str, `os.PathLike` or bytes (as they come out of a tf.string tensor).
    """
    paths = [os.fspath(os.fsdecode(p) if isinstance(p, bytes) else p) for p in paths]

    def check(path):
        try:
            _decode(path)
        except _Fault as fault:
            return path, str(fault)
        return None

    return [found for found in _map(check, paths) if found is not None]
