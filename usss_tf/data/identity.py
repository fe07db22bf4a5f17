"""What data a run saw: a fingerprint of each split, recorded and checked.

A run records, per domain, the folder it read (resolved to an absolute path)
and a fingerprint of its training and validation splits in ``manifest.json``.
A resumed run refuses data whose fingerprint changed, and ``usss-tf
evaluate`` reads the recorded folder and says when the split it scores is not
the one the run saw. Without this, a relative ``root`` resolved against
another working directory (or a regenerated folder) silently scores the
checkpoint on other images.

The fingerprint covers every listed example's key and the byte sizes of its
image and label files: cheap for any dataset size (no file is read), and it
tells apart another dataset, a regenerated one and added or removed files.
An edit of an image or label is caught when it changes the file's size (a
PNG's compressed size usually changes with its content), not when a few
pixels change and the size happens to stay. The same pixels written again
by another PNG encoder (another Pillow or zlib) can have other sizes and
count as other data; an existing synthetic folder is never rewritten, so
that takes deliberately regenerating it.
"""

import hashlib
import os


def _size(path):
    try:
        return os.stat(path).st_size if path else -1
    except OSError:
        return -1


def fingerprint(examples):
    """``{"files": count, "sha256": hex}`` of ``examples`` (`readers.Example`s)."""
    digest = hashlib.sha256()
    for example in sorted(examples, key=lambda e: e.key):
        line = f"{example.key}\t{_size(example.image)}\t{_size(example.label)}\n"
        digest.update(line.encode())
    return {"files": len(examples), "sha256": digest.hexdigest()}


def describe_change(recorded, current):
    """One phrase on how fingerprint ``current`` differs from ``recorded``."""
    if recorded["files"] != current["files"]:
        return f"{recorded['files']} files when the run saw it, {current['files']} now"
    return f"{current['files']} files as when the run saw it, but other names or sizes"
