"""ImageFolder trees (Oxford-IIIT Pet, Tiny ImageNet, …): one sub-folder per class.

Accepted layouts under the given root:

- ``root/<class>/<image>``: every image; split by the spec (random 80/10/10);
- ``root/train/<class>/<image>`` and ``root/test/<class>/<image>`` (or ``val/`` in place of
  ``test/``): the dataset's own test split.

Images are decoded with Pillow, converted to RGB and resized to a square ``image_size``,
then kept in memory as uint8.

NOTE: Tiny ImageNet's released ``val/`` folder is flat (``val/images`` + an annotation file);
rearrange it into class folders first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from loope.data.splits import Split

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
LAYOUT = "root/<class>/<image> (or root/train/<class>/… with root/test/ or root/val/)"
TEST_FOLDERS = ("test", "val")


def load_image_folder(path: Path, image_size: int) -> tuple[Split, Split | None, list[str]]:
    """All images of a flat tree, or the train and test parts of a split tree, and classes.

    Returns (train or everything, test or None, class names in label order).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.path {root}: not a folder; expected {LAYOUT}")
    test_root = next((root / t for t in TEST_FOLDERS if (root / t).is_dir()), None)
    if (root / "train").is_dir() and test_root is not None:
        classes = _classes(root / "train")
        test_classes = _classes(test_root)
        if test_classes != classes:
            extra = sorted(set(test_classes) ^ set(classes))
            raise ValueError(
                f"dataset.path {root}: train and {test_root.name} classes differ: {extra}"
            )
        train = _read_tree(root / "train", classes, image_size)
        return train, _read_tree(test_root, classes, image_size), classes
    classes = _classes(root)
    return _read_tree(root, classes, image_size), None, classes


def has_official_test(path: Path) -> bool:
    root = Path(path)
    return (root / "train").is_dir() and any((root / t).is_dir() for t in TEST_FOLDERS)


def _classes(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(
            f"dataset.path {root}: found {len(classes)} class folders; expected {LAYOUT}"
        )
    return classes


def _read_tree(root: Path, classes: list[str], image_size: int) -> Split:
    images, targets = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"dataset.path {root / name}: no images; expected {LAYOUT}")
        images.extend(_read_image(file, image_size) for file in files)
        targets.extend([label] * len(files))
    log.info("read %d images of %d classes from %s", len(images), len(classes), root)
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # n, 3, S, S
    return Split(stacked, torch.tensor(targets, dtype=torch.long))


def _read_image(file: Path, image_size: int) -> np.ndarray:
    """One image as uint8 (S, S, 3)."""
    try:
        with Image.open(file) as image:
            rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{file}: not a readable image ({error})") from None
