"""Where an example's files live in each dataset's on-disk layout, defined once.

The readers (``usss_tf.data.readers``) list examples through these
definitions; the synthetic writer, the TFDS materialiser and the tests' dataset
trees write files at the paths they give. So a layout is spelled in one place.

- ``cityscapes``: ``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` with
  ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``;
- ``idd``: the same structure, images ``{stem}_leftImg8bit.{png,jpg}``, labels
  ``{stem}_gtFine_labellevel3Ids.png`` (the IDD toolkit's ``createLabels``);
- ``camvid`` (SegNet): ``{split}/{name}.png`` with ``{split}annot/{name}.png``;
- ``sunrgbd``: the folders ``{split}/image/{name}.{jpg,png}`` with
  ``{split}/label37/{name}.png``, or a list file ``{split}37.txt``
  (``SUNRGBD_LIST_FILE``) pairing differently named files.
"""

import dataclasses
import pathlib

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass(frozen=True)
class GroupedLayout:
    """Images and labels in parallel trees, one folder per group (city, sequence).

    An example's key is ``{group}/{stem}``.
    """

    name: str
    image_suffixes: tuple
    label_suffix: str
    image_root: str = "leftImg8bit"
    label_root: str = "gtFine"

    def image_dir(self, root, split):
        return pathlib.Path(root) / self.image_root / split

    def label_dir(self, root, split):
        return pathlib.Path(root) / self.label_root / split

    def label_path(self, root, split, key):
        return self.label_dir(root, split) / f"{key}{self.label_suffix}"

    def example_paths(self, root, split, group, stem, image_suffix=None):
        """(image path, label path) of example ``{group}/{stem}`` (``root`` may be relative)."""
        image_suffix = image_suffix or self.image_suffixes[0]
        return (self.image_dir(root, split) / group / f"{stem}{image_suffix}",
                self.label_path(root, split, f"{group}/{stem}"))


@dataclasses.dataclass(frozen=True)
class FlatLayout:
    """Images in one folder per split, labels of the same name in another. Key: the file stem."""

    name: str
    image_folder: str  # a template with {split}
    label_folder: str
    image_suffixes: tuple = IMAGE_SUFFIXES
    label_suffix: str = ".png"

    def image_dir(self, root, split):
        return pathlib.Path(root) / self.image_folder.format(split=split)

    def label_dir(self, root, split):
        return pathlib.Path(root) / self.label_folder.format(split=split)

    def label_path(self, root, split, key):
        return self.label_dir(root, split) / f"{key}{self.label_suffix}"

    def example_paths(self, root, split, name, image_suffix=".png"):
        """(image path, label path) of example ``name`` (``root`` may be relative)."""
        return self.image_dir(root, split) / f"{name}{image_suffix}", self.label_path(root, split, name)


CITYSCAPES = GroupedLayout("cityscapes", ("_leftImg8bit.png",), "_gtFine_labelIds.png")
IDD = GroupedLayout("idd", ("_leftImg8bit.png", "_leftImg8bit.jpg"), "_gtFine_labellevel3Ids.png")
CAMVID = FlatLayout("camvid", "{split}", "{split}annot")
SUNRGBD = FlatLayout("sunrgbd", "{split}/image", "{split}/label37")
SUNRGBD_LIST_FILE = "{split}37.txt"  # lines: image [depth] label, relative to the root.
SUNRGBD_LABEL_FOLDER = "label37"  # where a list file's bare label names are looked up.

LAYOUTS = {layout.name: layout for layout in (CITYSCAPES, IDD, CAMVID, SUNRGBD)}
