"""TFDS as a data source: prepare a TFDS dataset, then materialise it as files.

A domain entry with ``source: tfds`` reads its data through TensorFlow
Datasets instead of an extracted folder::

    - name: cityscapes
      source: tfds
      root: ~/tensorflow_datasets          # the TFDS data_dir
      manual_dir: ~/downloads/cityscapes   # holds the manual-download zips
                                           # (default: {root}/downloads/manual)

For Cityscapes this is the ``cityscapes/semantic_segmentation`` builder
(version 1.0.0). It prepares from ``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip`` in the manual dir (no network) and yields
``image_id`` (``aachen_000000_000019``), ``image_left`` and
``segmentation_label``: PNG files whose pixels are the *raw* labelIds (the
34-id space), mapped to train ids later by the domain's table like any other
Cityscapes label.

Why materialise instead of reading the TFRecords in tf.data: everything
downstream works on file paths and example keys — the pipeline decodes files
by path, the checks name files, the manifest lists keys, and evaluation
compares with ``cityscapesscripts``, which reads ``gtFine/`` files. So each
requested split is written once, in the Cityscapes layout, to
``{root}/usss_tf/{builder}/{config}/{version}/`` and handed to the normal
reader. The PNG bytes TFDS stored are written verbatim (``SkipDecoding``):
the files are byte-identical to those in the zips, nothing is re-encoded.
A split is written to a temporary folder, moved into place and marked
complete last, under a file lock, so an interrupted or concurrent run never
sees half a split; a complete split is never written again.
"""

import contextlib
import fcntl
import os
import pathlib
import shutil
import tempfile

from usss_tf.data import layouts
from usss_tf.domains import TFDS_BUILDERS
from usss_tf.run_dir import write_json_atomic
from usss_tf.errors import ConfigError, DatasetError

# domain name -> TFDS builder/config (``domains.TFDS_BUILDERS``); examples are
# written in the Cityscapes layout.
_CITYSCAPES = TFDS_BUILDERS["cityscapes"]
MANUAL_FILES = {_CITYSCAPES: ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")}
# Split folder names of the layout -> TFDS split names.
_TFDS_SPLIT = {"val": "validation"}
_MARKER = ".complete-{split}.json"


def supports(domain_name) -> bool:
    """Whether `domain_name` can use ``source: tfds``."""
    return domain_name in TFDS_BUILDERS


def tfds_split(split) -> str:
    """The TFDS split a layout split folder comes from (``val`` -> ``validation``)."""
    return _TFDS_SPLIT.get(split, split)


def cache_dir(data_dir, builder_name, version) -> pathlib.Path:
    """Where the materialised files of `builder_name` live under the TFDS data_dir."""
    return pathlib.Path(data_dir).expanduser().absolute() / "usss_tf" / builder_name / str(version)


def materialized_data_dir(domain_name, root):
    """The TFDS data_dir whose ``cache_dir`` of ``domain_name``'s builder is ``root``
    (``{data_dir}/usss_tf/{builder}/{config}/{version}``); None when ``root`` is not one."""
    root = pathlib.Path(root)
    expected = ("usss_tf", *TFDS_BUILDERS[domain_name].split("/"))
    depth = len(expected) + 1  # and the version folder
    if len(root.parts) <= depth or root.parts[-depth:-1] != expected:
        return None
    return pathlib.Path(*root.parts[:-depth])


@contextlib.contextmanager
def _locked(folder):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(domain_name, data_dir, manual_dir=None, where="", echo=None):
    """Returns the prepared TFDS builder of `domain_name`, preparing it if needed.

    Raises:
        ConfigError: the domain has no TFDS builder.
        DatasetError: the manual-download files are missing or preparing failed.
    """
    if not supports(domain_name):
        raise ConfigError(
            f"{where}: domain {domain_name!r} has no TFDS source; "
            f"available for: {', '.join(sorted(TFDS_BUILDERS))}"
        )
    import tensorflow_datasets as tfds

    name = TFDS_BUILDERS[domain_name]
    data_dir = pathlib.Path(data_dir).expanduser().absolute()
    builder = tfds.builder(name, data_dir=str(data_dir))
    if builder.is_prepared():
        return builder
    manual = pathlib.Path(manual_dir).expanduser().absolute() if manual_dir else (
        data_dir / "downloads" / "manual"
    )
    missing = [f for f in MANUAL_FILES.get(name, ()) if not (manual / f).is_file()]
    if missing:
        raise DatasetError(
            f"{where}: TFDS dataset {name} is not prepared in {data_dir} and its manual "
            f"download is incomplete: missing {', '.join(str(manual / f) for f in missing)} "
            "(download them from https://www.cityscapes-dataset.com after registering)"
        )
    if echo:
        echo(f"[data] {domain_name}: preparing TFDS {name} in {data_dir} from {manual}")
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
        )
    except Exception as error:  # TFDS raises AssertionError, OSError, ValueError...
        raise DatasetError(
            f"{where}: preparing TFDS {name} from {manual} failed: {error}"
        ) from error
    return builder


def _write_cityscapes_split(builder, split, folder):
    """Writes TFDS `split` as ``leftImg8bit/{split}/`` + ``gtFine/{split}/`` under `folder`."""
    import tensorflow_datasets as tfds

    skip = tfds.decode.SkipDecoding()
    dataset = builder.as_dataset(
        split=tfds_split(split),
        shuffle_files=False,
        decoders={"image_left": skip, "segmentation_label": skip},
    )
    layout = layouts.CITYSCAPES
    for directory in (layout.image_dir(folder, split), layout.label_dir(folder, split)):
        directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for example in tfds.as_numpy(dataset):
        image_id = example["image_id"].decode()
        city = image_id.rsplit("_", 2)[0]
        paths = layout.example_paths(folder, split, city, image_id)
        for path, feature in zip(paths, ("image_left", "segmentation_label")):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(example[feature])
        count += 1
    return count


def materialize(domain_name, data_dir, splits, manual_dir=None, echo=None, where=""):
    """Prepares `domain_name` with TFDS and returns a root in its layout holding `splits`.

    Args:
        domain_name: a domain with a TFDS builder (`TFDS_BUILDERS`).
        data_dir: the TFDS data_dir (the domain's ``root``).
        splits: split folder names, e.g. ``("train", "val")``.
        manual_dir: folder with the manual-download zips; default
            ``{data_dir}/downloads/manual`` (TFDS' default).
        echo: ``echo(line)`` for progress notes, or None.
        where: config key prefix for messages, e.g. ``"key 'domains.0'"``.

    Raises:
        DatasetError: preparing failed or a split does not exist in TFDS.
    """
    builder = prepare(domain_name, data_dir, manual_dir, where=where, echo=echo)
    root = cache_dir(data_dir, builder.info.full_name.rsplit("/", 1)[0], builder.info.version)
    available = set(builder.info.splits.keys())
    for split in dict.fromkeys(splits):
        if tfds_split(split) not in available:
            raise DatasetError(
                f"{where}: split {split!r} is not in TFDS {builder.info.full_name}; it has "
                f"{', '.join(sorted(available))} (use 'val' for 'validation')"
            )
        marker = root / _MARKER.format(split=split)
        if marker.is_file():
            continue
        with _locked(root):
            if marker.is_file():  # another process finished it while we waited
                continue
            if echo:
                echo(f"[data] {domain_name}: writing TFDS split {split!r} as files to {root}")
            tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=root))
            try:
                count = _write_cityscapes_split(builder, split, tmp)
                for kind in (layouts.CITYSCAPES.image_root, layouts.CITYSCAPES.label_root):
                    target = root / kind / split
                    if target.exists():  # left by an interrupted run, never marked complete
                        shutil.rmtree(target)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp / kind / split, target)
                write_json_atomic(marker, {"builder": builder.info.full_name, "split": split,
                                           "examples": count})
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return root
