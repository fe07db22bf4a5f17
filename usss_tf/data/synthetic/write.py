"""Writing synthetic domains to disk in their datasets' layouts, atomically and reproducibly."""

import json
import os
import pathlib
import secrets
import shutil
import zlib

import numpy as np
from PIL import Image

from usss_tf import domains as domains_lib
from usss_tf.data import layouts, readers
from usss_tf.errors import ConfigError, DatasetError
from usss_tf.data.synthetic.render import check_size, render_scene
from usss_tf.data.synthetic.style import SYNTHETIC_DOMAINS, style_of

# Bump when the drawing code changes, so stale folders are regenerated.
GENERATOR_VERSION = 1
MARKER_FILE = "synthetic.json"
SPLITS = ("train", "val")


# ---------------------------------------------------------------------------
# Writing domains to disk.
# ---------------------------------------------------------------------------

_CITIES = {"train": ("synthberg", "synthdorf"), "val": ("synthhausen",)}


def _cityscapes_paths(split, index):
    cities = _CITIES[split]
    city = cities[index % len(cities)]
    stem = f"{city}_{index // len(cities):06d}_000019"
    return layouts.CITYSCAPES.example_paths("", split, city, stem)


def _camvid_paths(split, index):
    return layouts.CAMVID.example_paths("", split, f"synth_{index:05d}")


def _idd_paths(split, index):
    sequence = f"{index % 3}"
    return layouts.IDD.example_paths("", split, sequence, f"{index:06d}")


# layout -> (split, index) -> (image path, label path), relative to the root.
_LAYOUT_PATHS = {"cityscapes": _cityscapes_paths, "camvid": _camvid_paths, "idd": _idd_paths}






def _image_seed(seed, domain_name, split, index) -> np.random.SeedSequence:
    # crc32 is stable across processes (unlike hash()), so seeds are too.
    words = [seed, zlib.crc32(domain_name.encode()), zlib.crc32(split.encode()), index]
    return np.random.SeedSequence(words)


def _manifest(domain_name, seed, counts, size) -> dict:
    return {
        "domain": domain_name,
        "layout": domains_lib.get_domain(domain_name).layout,
        "seed": seed,
        "counts": counts,
        "size": list(size),
        "generator_version": GENERATOR_VERSION,
    }


def _read_manifest(root: pathlib.Path):
    path = root / MARKER_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_complete(root: pathlib.Path, manifest: dict) -> bool:
    """Whether `root` was written with `manifest` and still has all its files."""
    if _read_manifest(root) != manifest:
        return False
    try:
        return all(
            len(readers.list_examples(manifest["domain"], root, split)) == count
            for split, count in manifest["counts"].items()
            if count
        )
    except DatasetError:
        return False


def _write_png(array, path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def write_synthetic_domain(
    name, root, *, num_train=60, num_val=20, size=(128, 256), seed=0
) -> pathlib.Path:
    """Writes one synthetic domain in its dataset layout under `root`.

    The folder is generated in a temporary sibling and renamed into place,
    so readers never see half a dataset. A ``synthetic.json`` inside records
    how it was made: calling again with the same arguments returns the
    existing folder untouched; different arguments (or a newer generator)
    regenerate it. A folder without that file is never overwritten.

    Args:
        name: one of `SYNTHETIC_DOMAINS`.
        root: the dataset folder to create (e.g. ``data/synth_city``).
        num_train, num_val: images in the ``train`` and ``val`` splits.
        size: ``(height, width)`` of every image.
        seed: base seed; equal seeds write byte-identical files.

    Returns:
        `root` as an absolute `pathlib.Path`.
    """
    style_of(name)
    size = check_size(size)
    counts = {"train": int(num_train), "val": int(num_val)}
    if counts["train"] < 1 or counts["val"] < 0:
        raise ConfigError(
            f"synthetic domain {name!r}: need num_train >= 1 and num_val >= 0, "
            f"got {num_train} and {num_val}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"synthetic domain {name!r}: seed must be an int >= 0, got {seed!r}")
    seed = int(seed)
    root = pathlib.Path(root).expanduser().absolute()
    manifest = _manifest(name, seed, counts, size)

    if root.exists():
        if _is_complete(root, manifest):
            return root
        if not (root / MARKER_FILE).is_file():
            raise DatasetError(
                f"{root} exists but has no {MARKER_FILE}, so it was not written "
                "by the synthetic generator; refusing to overwrite it (remove "
                "it or choose another folder)"
            )

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling_dir(root, "tmp")
    try:
        paths_of = _LAYOUT_PATHS[manifest["layout"]]
        for split in SPLITS:
            for directory in paths_of(split, 0):
                (staging / directory.parent).mkdir(parents=True, exist_ok=True)
            for index in range(counts[split]):
                rng = np.random.default_rng(_image_seed(seed, name, split, index))
                image, label = render_scene(name, rng, size)
                image_path, label_path = paths_of(split, index)
                _write_png(image, staging / image_path)
                _write_png(label, staging / label_path)
        # The marker goes last: its presence means the folder is complete.
        (staging / MARKER_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(staging, root, manifest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def _sibling_dir(root: pathlib.Path, kind: str) -> pathlib.Path:
    """A new hidden folder next to `root` (same file system, so renames are atomic).

    Unlike `tempfile.mkdtemp` (mode 0700) it gets the usual permissions, which
    the dataset keeps once renamed into place.
    """
    while True:
        path = root.parent / f".{root.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _move_into_place(staging: pathlib.Path, root: pathlib.Path, manifest: dict):
    """Renames `staging` to `root`, replacing an outdated generated folder."""
    if root.exists():
        # An outdated generated version: move it aside, swap, then drop it.
        stale = _sibling_dir(root, "old")
        try:
            os.rename(root, stale / "data")
            try:
                os.rename(staging, root)
            except OSError:
                os.rename(stale / "data", root)
                raise
        finally:
            shutil.rmtree(stale, ignore_errors=True)
        return
    try:
        os.rename(staging, root)
    except OSError:
        # Another process finished the same folder first; use theirs.
        if not _is_complete(root, manifest):
            raise


def write_synthetic_domains(
    out_dir,
    domains=SYNTHETIC_DOMAINS,
    *,
    num_train=60,
    num_val=20,
    size=(128, 256),
    seed=0,
) -> dict:
    """Writes each synthetic domain to ``out_dir/<name>``.

    Returns:
        ``{name: root}`` in the order of `domains`.
    """
    if isinstance(domains, str):
        domains = (domains,)
    out_dir = pathlib.Path(out_dir).expanduser().absolute()
    return {
        name: write_synthetic_domain(
            name, out_dir / name, num_train=num_train, num_val=num_val, size=size, seed=seed
        )
        for name in domains
    }

