"""Datasets named in a spec, turned into train / val / test splits the trainer can use.

Every bundle says how it was split (`split`), so a run records it next to its metrics, and
Three-Cell bundles carry their label statistics: positive rates and the majority baseline.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from loope.data import three_cell
from loope.data.cifar import load_cifar
from loope.data.digits import load_digits_split
from loope.data.image_folder import has_official_test, load_image_folder
from loope.data.splits import Split, split_official, split_random
from loope.spec import DatasetSpec

__all__ = ["DataBundle", "Split", "load_dataset", "three_cell_config"]

log = logging.getLogger(__name__)

Task = Literal["multilabel", "multiclass"]

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class DataBundle:
    """Everything the trainer needs to know about the data of a run.

    Attributes:
        split: how train/val/test were made, e.g. ``random 80/10/10 seed 0`` or ``official``.
        baseline: majority-rate scores on the test split (Three-Cell), what no PE can beat.
        positive_rates: per-bit rate of 1s on the test split, in percent (Three-Cell).
        mean_std: per-channel normalisation applied after augmentation, if any.
    """

    train: Split
    val: Split
    test: Split
    task: Task
    num_outputs: int
    img_size: int
    in_chans: int
    natural_patch: int
    baseline: dict[str, float] | None = None
    positive_rates: dict[str, float] | None = None
    split: str = "random 80/10/10"
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    classes: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, float]:
        return {f"data/{k}_size": float(len(getattr(self, k))) for k in ("train", "val", "test")}


def load_dataset(spec: DatasetSpec) -> DataBundle:
    """The bundle the spec names, split as it asks."""
    if spec.name == "three-cell":
        bundle = _three_cell(spec)
    elif spec.name == "digits":
        bundle = _digits(spec)
    elif spec.name in ("cifar10", "cifar100"):
        bundle = _cifar(spec)
    elif spec.name == "image-folder":
        bundle = _image_folder(spec)
    else:
        raise ValueError(f"dataset.name: unknown dataset {spec.name!r}")
    if spec.normalize == "imagenet":
        bundle = dataclasses.replace(bundle, mean_std=IMAGENET_MEAN_STD)
    log.info("dataset %s: split %s, sizes %s", spec.name, bundle.split, bundle.sizes())
    return bundle


def _split_name(spec: DatasetSpec) -> str:
    if spec.split == "official":
        return f"official test, val {spec.fractions[1]:.0%} of train, seed {spec.seed}"
    percents = "/".join(f"{round(100 * f)}" for f in spec.fractions)
    return f"random {percents} seed {spec.seed}"


def three_cell_config(spec: DatasetSpec) -> three_cell.ThreeCellConfig:
    """The generator configuration: the preset (default `quick`) with the spec's overrides."""
    preset = spec.preset or "quick"
    if preset not in three_cell.PRESETS:
        allowed = ", ".join(three_cell.PRESETS)
        raise ValueError(
            f"dataset.preset: unknown Three-Cell preset {preset!r}; allowed: {allowed}"
        )
    keys = ("grid", "cell", "n", "max_sq_len")
    overrides = {k: getattr(spec, k) for k in keys if getattr(spec, k) is not None}
    return dataclasses.replace(
        three_cell.PRESETS[preset],
        seed=spec.seed,
        split=tuple(spec.fractions),
        vector_sum_rule=spec.vector_sum_rule,
        reject_collinear=spec.reject_collinear,
        **overrides,
    )


def _three_cell(spec: DatasetSpec) -> DataBundle:
    config = three_cell_config(spec)
    samples = three_cell.generate(config)

    def split(name: three_cell.SplitName) -> Split:
        part = samples.split(name)
        return Split(torch.from_numpy(part.render_all()), torch.from_numpy(part.labels).float())

    test = split("test")
    stats = three_cell.label_stats(test.targets.numpy())
    log.info(
        "Three-Cell test labels: positive %s, majority %s", stats["positive"], stats["majority"]
    )
    return DataBundle(
        train=split("train"),
        val=split("val"),
        test=test,
        task="multilabel",
        num_outputs=6,
        img_size=config.image_size,
        in_chans=3,
        natural_patch=config.cell,
        baseline=stats["majority"],
        positive_rates=stats["positive"],
        split=f"{_split_name(spec)} (by index; samples are independent)",
    )


def _digits(spec: DatasetSpec) -> DataBundle:
    """scikit-learn's bundled 8×8 handwritten digits, split by a seeded shuffle."""
    everything = load_digits_split()
    train, val, test = split_random(everything, spec.fractions, spec.seed)
    images = _resized(train, val, test, spec.image_size)
    size = spec.image_size or 8
    return DataBundle(
        *images, "multiclass", 10, img_size=size, in_chans=1, natural_patch=size // 4,
        split=_split_name(spec),
    )  # fmt: skip


def _cifar(spec: DatasetSpec) -> DataBundle:
    assert spec.path is not None  # the spec requires it
    train, test, num_classes = load_cifar(spec.name, Path(spec.path))  # type: ignore[arg-type]
    parts = _official_or_random(spec, train, test)
    size = spec.image_size or 32
    return DataBundle(
        *_resized(*parts, spec.image_size), "multiclass", num_classes, img_size=size,
        in_chans=3, natural_patch=max(1, size // 8), split=_split_name(spec),
    )  # fmt: skip


def _image_folder(spec: DatasetSpec) -> DataBundle:
    assert spec.path is not None and spec.image_size is not None  # the spec requires them
    if spec.split == "official" and not has_official_test(Path(spec.path)):
        raise ValueError(
            f"dataset.split: 'official' needs {spec.path}/train and {spec.path}/test (or val)"
        )
    everything, test, classes = load_image_folder(Path(spec.path), spec.image_size)
    if test is None or spec.split == "random":
        merged = everything if test is None else _concat(everything, test)
        parts = split_random(merged, spec.fractions, spec.seed)
    else:
        parts = split_official(everything, test, spec.fractions[1], spec.seed)
    return DataBundle(
        *parts, "multiclass", len(classes), img_size=spec.image_size, in_chans=3,
        natural_patch=max(1, spec.image_size // 14), split=_split_name(spec), classes=classes,
    )  # fmt: skip


def _official_or_random(spec: DatasetSpec, train: Split, test: Split) -> tuple[Split, ...]:
    if spec.split == "official":
        return split_official(train, test, spec.fractions[1], spec.seed)
    return split_random(_concat(train, test), spec.fractions, spec.seed)


def _concat(first: Split, second: Split) -> Split:
    return Split(
        torch.cat([first.images, second.images]), torch.cat([first.targets, second.targets])
    )


def _resized(train: Split, val: Split, test: Split, size: int | None) -> tuple[Split, ...]:
    """The splits at `size`×`size` (bilinear), or unchanged when no size is asked for."""
    if size is None or size == train.images.shape[-1]:
        return train, val, test
    return tuple(_resize(part, size) for part in (train, val, test))


def _resize(part: Split, size: int, chunk: int = 1024) -> Split:
    """`part` resized chunk by chunk, kept as uint8.

    NOTE: splits live in memory; CIFAR at 224 px is 60k·3·224² bytes ≈ 9 GB.
    """
    resized = torch.empty((len(part), part.images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(part), chunk):
        images, _ = part.take(slice(start, start + chunk))
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear")
        resized[start : start + chunk] = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    return Split(resized, part.targets)
