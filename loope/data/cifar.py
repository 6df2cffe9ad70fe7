"""CIFAR-10 and CIFAR-100 in their python-pickle release, read from the folder a user gives.

Expected layout (the extracted release archives):

- CIFAR-10, ``cifar-10-batches-py/``: ``data_batch_1`` … ``data_batch_5`` and ``test_batch``,
  each a pickled dict with ``data`` (n × 3072 uint8, channel-major 32×32) and ``labels``.
- CIFAR-100, ``cifar-100-python/``: ``train`` and ``test``, dicts with ``data`` and
  ``fine_labels`` (100 classes).

The path may be that folder or the folder that holds it.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from loope.data.splits import Split

log = logging.getLogger(__name__)

CifarName = Literal["cifar10", "cifar100"]


@dataclass(frozen=True)
class CifarLayout:
    """Where one release keeps its parts and which key holds the labels."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int

    def describe(self) -> str:
        files = ", ".join((*self.train_files, *self.test_files))
        return (
            f"{self.folder}/ with {files}: pickled dicts holding 'data' "
            f"(n×3072 uint8) and '{self.label_key}'"
        )


LAYOUTS: dict[CifarName, CifarLayout] = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
    ),
    "cifar100": CifarLayout("cifar-100-python", ("train",), ("test",), "fine_labels", 100),
}


def load_cifar(name: CifarName, path: Path) -> tuple[Split, Split, int]:
    """The official train and test parts (uint8 images, n×3×32×32) and the class count."""
    layout = LAYOUTS[name]
    root = _find_root(Path(path), layout)
    train = _read_parts(root, layout.train_files, layout)
    test = _read_parts(root, layout.test_files, layout)
    log.info("read %s from %s: %d train, %d test", name, root, len(train), len(test))
    return train, test, layout.num_classes


def _find_root(path: Path, layout: CifarLayout) -> Path:
    for candidate in (path, path / layout.folder):
        if all((candidate / f).is_file() for f in (*layout.train_files, *layout.test_files)):
            return candidate
    if not path.exists():
        raise FileNotFoundError(
            f"dataset.path {path}: does not exist; expected {layout.describe()}"
        )
    missing = [f for f in (*layout.train_files, *layout.test_files) if not (path / f).is_file()]
    raise FileNotFoundError(
        f"dataset.path {path}: missing {', '.join(missing)}; expected {layout.describe()}"
    )


def _read_parts(root: Path, files: tuple[str, ...], layout: CifarLayout) -> Split:
    images, labels = [], []
    for name in files:
        data, targets = _read_batch(root / name, layout)
        images.append(data)
        labels.append(targets)
    stacked = torch.from_numpy(np.concatenate(images)).reshape(-1, 3, 32, 32)  # n, 3, 32, 32
    return Split(stacked, torch.from_numpy(np.concatenate(labels)).long())


def _read_batch(file: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch, checked: uint8 n×3072 data and n labels in range."""
    batch = _unpickle(file, layout)
    data = _entry(batch, "data", file, layout)
    labels = np.asarray(_entry(batch, layout.label_key, file, layout), dtype=np.int64)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"{file}: 'data' is {data.dtype} {data.shape}; expected uint8 (n, 3072); "
            f"layout: {layout.describe()}"
        )
    if labels.shape != (len(data),) or labels.min() < 0 or labels.max() >= layout.num_classes:
        raise ValueError(
            f"{file}: '{layout.label_key}' must hold {len(data)} classes in "
            f"[0, {layout.num_classes}); layout: {layout.describe()}"
        )
    return data, labels


def _unpickle(file: Path, layout: CifarLayout) -> dict[str, Any]:
    try:
        with open(file, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")  # noqa: S301 - the user's own file
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ValueError(
            f"{file}: not a CIFAR pickle ({error}); expected {layout.describe()}"
        ) from None
    if not isinstance(batch, dict):
        raise ValueError(f"{file}: holds {type(batch).__name__}; expected {layout.describe()}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _entry(batch: dict[str, Any], key: str, file: Path, layout: CifarLayout) -> Any:
    if key not in batch:
        raise ValueError(f"{file}: no '{key}' entry; expected {layout.describe()}")
    return batch[key]
