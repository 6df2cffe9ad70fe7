"""Datasets named in a spec, turned into train / val / test splits the trainer can use."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from loope.data import three_cell
from loope.spec import DatasetSpec

Task = Literal["multilabel", "multiclass"]


@dataclass(frozen=True)
class Split:
    """Images (n, C, H, W) float32 and targets: (n, K) float32 multi-label or (n,) int64."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class DataBundle:
    """Everything the trainer needs to know about the data of a run."""

    train: Split
    val: Split
    test: Split
    task: Task
    num_outputs: int
    img_size: int
    in_chans: int
    natural_patch: int
    baseline: dict[str, float] | None = None  # majority-rate scores on the test split


def load_dataset(spec: DatasetSpec) -> DataBundle:
    if spec.name == "three-cell":
        return _three_cell(spec)
    if spec.name == "digits":
        return _digits(spec)
    raise ValueError(f"dataset.name: unknown dataset {spec.name!r}")


def three_cell_config(spec: DatasetSpec) -> three_cell.ThreeCellConfig:
    """The generator configuration: the preset (default `quick`) with the spec's overrides."""
    preset = spec.preset or "quick"
    if preset not in three_cell.PRESETS:
        allowed = ", ".join(three_cell.PRESETS)
        raise ValueError(
            f"dataset.preset: unknown Three-Cell preset {preset!r}; allowed: {allowed}"
        )
    overrides = {k: getattr(spec, k) for k in ("grid", "cell", "n") if getattr(spec, k) is not None}
    return dataclasses.replace(three_cell.PRESETS[preset], seed=spec.seed, **overrides)


def _three_cell(spec: DatasetSpec) -> DataBundle:
    config = three_cell_config(spec)
    samples = three_cell.generate(config)

    def split(name: three_cell.SplitName) -> Split:
        part = samples.split(name)
        images = torch.from_numpy(part.render_all()).float().div_(255)
        return Split(images, torch.from_numpy(part.labels).float())

    test = split("test")
    majority = three_cell.score(_majority_predictions(test.targets.numpy()), test.targets.numpy())
    return DataBundle(
        train=split("train"),
        val=split("val"),
        test=test,
        task="multilabel",
        num_outputs=6,
        img_size=config.image_size,
        in_chans=3,
        natural_patch=config.cell,
        baseline=majority,
    )


def _majority_predictions(labels: np.ndarray) -> np.ndarray:
    majority = labels.mean(axis=0) >= 0.5
    return np.broadcast_to(majority, labels.shape)


def _digits(spec: DatasetSpec) -> DataBundle:
    """scikit-learn's bundled 8×8 handwritten digits, split 80/10/10 by a seeded shuffle."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div_(16).unsqueeze(1)  # n, 1, 8, 8
    targets = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(spec.seed))
    n_train, n_val = int(0.8 * len(order)), int(0.1 * len(order))
    parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    train, val, test = (Split(images[i], targets[i]) for i in parts)
    return DataBundle(train, val, test, "multiclass", 10, img_size=8, in_chans=1, natural_patch=2)
