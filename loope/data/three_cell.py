"""The Three-Cell benchmark: position can only come from the positional embedding.

An image is a ``g×g`` grid of ``c×c`` cells, black except one pure red cell (the reference
R), one green cell (G) and one blue cell (B). Because the cells are aligned with the ViT
patch grid, neighbouring patches share nothing, so a model without a positional embedding
sees the same multiset of tokens for every image and can only learn the majority of each
label. Six binary labels ask about distances, orientation, areas and the sum of the three
positions.

Coordinates: ``x`` is the column, ``y`` the row, origin top-left. Positions are stored as
``(row, col)`` pairs in the order R, G, B. Squared distances and doubled areas are compared
as integers, so "equal" is exact.

Generation uses numpy only; torch appears only in :class:`ThreeCellDataset`.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

VectorSumRule = Literal["both", "either"]
"""How bit 5 combines its two tests: the spec's rule is ``both`` (x-sum > g−1 AND y-sum >
g−1); ``either`` uses OR."""

SplitName = Literal["train", "val", "test"]
PartName = Literal["all", "train", "val", "test"]
GroupName = Literal["distance", "orientation", "area", "vector_sum"]

BIT_KEYS: tuple[str, ...] = tuple(f"bit{i}" for i in range(6))
"""Column keys of the six labels, in spec order (used by :func:`score` and labels.csv)."""

BIT_NAMES: tuple[str, ...] = (
    "g_farther",  # bit 0: |R−G| > |R−B|
    "b_farther",  # bit 1: |R−B| > |R−G|
    "clockwise",  # bit 2: Δ > 0, i.e. R→G turns clockwise to R→B on screen (y points down)
    "area_rg_larger",  # bit 3: A_RG > A_RB
    "area_rb_larger",  # bit 4: A_RB > A_RG
    "sum_beyond_centre",  # bit 5: the vector-sum rule
)
"""What each of the six bits means, in spec order."""

GROUPS: dict[GroupName, tuple[int, ...]] = {
    "distance": (0, 1),
    "orientation": (2,),
    "area": (3, 4),
    "vector_sum": (5,),
}
"""The four scored groups and the bits each one averages."""

MODES: tuple[str, ...] = ("equal", "g_nearer", "g_farther")
"""The generator's three modes, drawn with equal probability; the index is the mode code."""

CACHE_LIMIT_BYTES = 256 * 2**20
"""Largest rendered uint8 array :class:`ThreeCellDataset` caches when not told otherwise."""

_MAX_ROUNDS = 10_000


def _require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class ThreeCellConfig:
    """Every choice of the benchmark.

    Attributes:
        grid: cells per side ``g``.
        cell: pixels per cell side ``c``; the image is ``g·c`` pixels square.
        n: number of images before splitting.
        split: train/val/test fractions, taken in that order by index.
        seed: seed of the numpy generator; the same seed gives the same set.
        max_sq_len: largest squared offset length ``a² + b²`` the generator may use;
            ``None`` means the spec's bound ``2(g−1)²``.
        vector_sum_rule: how bit 5 combines the x and y tests.
        reject_collinear: redraw triples with Δ = 0 (the spec does).
    """

    grid: int = 14
    cell: int = 16
    n: int = 10_000
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    max_sq_len: int | None = None
    vector_sum_rule: VectorSumRule = "both"
    reject_collinear: bool = True

    def __post_init__(self) -> None:
        _require(_is_int(self.grid) and self.grid >= 3, f"grid={self.grid!r}: must be an int >= 3")
        _require(_is_int(self.cell) and self.cell >= 1, f"cell={self.cell!r}: must be an int >= 1")
        _require(_is_int(self.n) and self.n >= 1, f"n={self.n!r}: must be an int >= 1")
        _require(_is_int(self.seed) and self.seed >= 0, f"seed={self.seed!r}: must be an int >= 0")
        self._validate_split()
        self._validate_max_sq_len()
        rules = get_args(VectorSumRule)
        _require(
            self.vector_sum_rule in rules,
            f"vector_sum_rule={self.vector_sum_rule!r}: must be one of {rules}",
        )
        _require(
            isinstance(self.reject_collinear, bool),
            f"reject_collinear={self.reject_collinear!r}: must be a bool",
        )

    def _validate_split(self) -> None:
        split = self.split
        _require(
            isinstance(split, tuple) and len(split) == 3,
            f"split={split!r}: must be a tuple of three fractions (train, val, test)",
        )
        _require(
            all(isinstance(f, int | float) and f >= 0 for f in split),
            f"split={split!r}: every fraction must be a number >= 0",
        )
        _require(
            math.isclose(sum(split), 1.0, abs_tol=1e-9),
            f"split={split!r}: fractions must sum to 1 (they sum to {sum(split)})",
        )

    def _validate_max_sq_len(self) -> None:
        if self.max_sq_len is None:
            return
        bound = 2 * (self.grid - 1) ** 2
        _require(
            _is_int(self.max_sq_len) and 2 <= self.max_sq_len <= bound,
            f"max_sq_len={self.max_sq_len!r}: must be an int in [2, 2(g-1)^2 = {bound}] "
            "(two distinct squared lengths are needed for the unequal modes)",
        )

    @property
    def image_size(self) -> int:
        """Side of the square image in pixels."""
        return self.grid * self.cell

    @property
    def sq_len_bound(self) -> int:
        """The largest squared offset length actually used."""
        return 2 * (self.grid - 1) ** 2 if self.max_sq_len is None else self.max_sq_len


PRESETS: dict[str, ThreeCellConfig] = {
    # The paper's benchmark: 14×14 cells of 16 px = 224 px, aligned with ViT-B/16 patches.
    "paper": ThreeCellConfig(grid=14, cell=16, n=10_000),
    # CPU-sized: 8×8 cells of 4 px = 32 px images, i.e. 64 tokens for a patch-4 ViT, so a tiny
    # ViT runs an epoch in seconds. Eight cells a side still leaves ~250k ordered (R, G, B)
    # triples and 33 distinct squared lengths up to 2·7² = 98, so the three modes and all six
    # bits keep their diversity (see label_stats); 6000 images give 4800 training samples.
    "quick": ThreeCellConfig(grid=8, cell=4, n=6_000),
}
"""Named configurations."""


# --- labels -------------------------------------------------------------------------------


def labels_for(
    positions: np.ndarray, grid: int, vector_sum_rule: VectorSumRule = "both"
) -> np.ndarray:
    """The six labels of each (R, G, B) triple, exactly as the spec's table.

    Args:
        positions: ``(n, 3, 2)`` integer ``(row, col)`` of R, G, B.
        grid: cells per side ``g``; bit 5 compares the coordinate sums with ``g − 1``.
        vector_sum_rule: ``both`` (spec) requires the x-sum and the y-sum to exceed
            ``g − 1``; ``either`` requires one of them.

    Returns:
        ``(n, 6)`` uint8 in spec order. Ties (equal distances, equal areas) set both bits of
        the group to 0; a collinear triple (Δ = 0) has bit 2 = 0.
    """
    pos = np.asarray(positions)
    _require(
        pos.ndim == 3 and pos.shape[1:] == (3, 2),
        f"positions shape {pos.shape}: must be (n, 3, 2)",
    )
    _require(np.issubdtype(pos.dtype, np.integer), f"positions dtype {pos.dtype}: must be int")
    rules = get_args(VectorSumRule)
    _require(
        vector_sum_rule in rules, f"vector_sum_rule={vector_sum_rule!r}: must be one of {rules}"
    )
    y = pos[..., 0].astype(np.int64)  # (n, 3) rows of R, G, B
    x = pos[..., 1].astype(np.int64)  # (n, 3) columns of R, G, B
    xr, xg, xb = x[:, 0], x[:, 1], x[:, 2]
    yr, yg, yb = y[:, 0], y[:, 1], y[:, 2]

    dist_rg = (xg - xr) ** 2 + (yg - yr) ** 2
    dist_rb = (xb - xr) ** 2 + (yb - yr) ** 2
    delta = (xg - xr) * (yb - yr) - (yg - yr) * (xb - xr)
    area_rg = np.abs((yr + yg) * (xg - xr))  # doubled A_RG
    area_rb = np.abs((yr + yb) * (xb - xr))  # doubled A_RB
    x_beyond = x.sum(axis=1) > grid - 1
    y_beyond = y.sum(axis=1) > grid - 1
    beyond = x_beyond & y_beyond if vector_sum_rule == "both" else x_beyond | y_beyond

    bits = (dist_rg > dist_rb, dist_rb > dist_rg, delta > 0, area_rg > area_rb, area_rb > area_rg)
    return np.stack([*bits, beyond], axis=1).astype(np.uint8)


def _as_bits(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` as a bool ``(n, 6)`` array, refusing anything but 0/1 entries."""
    arr = np.asarray(values)
    _require(
        arr.ndim == 2 and arr.shape[1] == 6 and arr.shape[0] >= 1,
        f"{name} shape {arr.shape}: must be (n, 6) with n >= 1",
    )
    _require(
        bool(np.isin(arr, (0, 1)).all()),
        f"{name}: entries must be 0/1 or bool (threshold logits before scoring)",
    )
    return arr.astype(bool)


def score(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy in percent: per bit (``bit0``..``bit5``), per group, and ``average``.

    A group's score is the mean of its bits' accuracies; ``average`` is the mean of the four
    group scores (so orientation and vector sum weigh as much as two bits each).
    """
    pred = _as_bits("predictions", predictions)
    true = _as_bits("labels", labels)
    _require(
        pred.shape == true.shape,
        f"predictions shape {pred.shape} != labels shape {true.shape}",
    )
    per_bit = (pred == true).mean(axis=0) * 100.0
    result = {key: float(acc) for key, acc in zip(BIT_KEYS, per_bit, strict=True)}
    for group, bits in GROUPS.items():
        result[group] = float(np.mean(per_bit[list(bits)]))
    result["average"] = float(np.mean([result[group] for group in GROUPS]))
    return result


def label_stats(labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Label balance in percent, the reference every result is read against.

    Returns:
        ``positive``: rate of 1s per bit, and per group the mean of its bits' rates.
        ``majority``: the :func:`score` of always predicting each bit's majority value (ties
        predict 0): per-bit majority rates, the four groups and ``average`` — what a PE-less
        ViT on Three-Cell can at best reach.
    """
    true = _as_bits("labels", labels)
    positive = true.mean(axis=0)
    majority_prediction = np.broadcast_to(positive > 0.5, true.shape)
    rates = {key: float(p * 100.0) for key, p in zip(BIT_KEYS, positive, strict=True)}
    for group, bits in GROUPS.items():
        rates[group] = float(np.mean([rates[BIT_KEYS[bit]] for bit in bits]))
    return {"positive": rates, "majority": score(majority_prediction, true)}


# --- generation ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _OffsetTable:
    """All integer offsets of each squared length that can land on the grid.

    ``vectors[k, :counts[k]]`` holds the ``(drow, dcol)`` with ``drow² + dcol² = keys[k]``.
    """

    keys: np.ndarray  # (K,) increasing squared lengths
    vectors: np.ndarray  # (K, M, 2) offsets, padded with zeros past counts[k]
    counts: np.ndarray  # (K,) number of offsets per key


@functools.cache
def _offset_table(grid: int, sq_len_bound: int) -> _OffsetTable:
    """The table of squared lengths → offset vectors, built once per grid and bound.

    NOTE: only offsets with ``|drow|, |dcol| ≤ g − 1`` are listed (a longer leg can never
    stay on the grid), and only keys that have such an offset; ``0`` is excluded because it
    would put G or B on R.
    """
    span = np.arange(-(grid - 1), grid)
    drow, dcol = (a.ravel() for a in np.meshgrid(span, span, indexing="ij"))
    sq = drow**2 + dcol**2
    keep = (sq >= 1) & (sq <= sq_len_bound)
    drow, dcol, sq = drow[keep], dcol[keep], sq[keep]

    order = np.lexsort((dcol, drow, sq))
    drow, dcol, sq = drow[order], dcol[order], sq[order]
    keys, starts, counts = np.unique(sq, return_index=True, return_counts=True)

    vectors = np.zeros((len(keys), int(counts.max()), 2), dtype=np.int64)
    for k, (start, count) in enumerate(zip(starts, counts, strict=True)):
        vectors[k, :count, 0] = drow[start : start + count]
        vectors[k, :count, 1] = dcol[start : start + count]
    for arr in (keys, vectors, counts):
        arr.setflags(write=False)
    return _OffsetTable(keys=keys, vectors=vectors, counts=counts)


def _draw_keys(rng: np.random.Generator, modes: np.ndarray, n_keys: int) -> np.ndarray:
    """Key indices ``(m, 2)`` for G and B realising each mode.

    Equal mode: one key for both. Unequal modes: two distinct keys, the smaller one going to
    G when G is nearer and to B when G is farther.
    """
    first = rng.integers(0, n_keys, size=len(modes))
    second = rng.integers(0, n_keys - 1, size=len(modes))
    second = second + (second >= first)  # uniform over keys other than `first`
    near, far = np.minimum(first, second), np.maximum(first, second)

    key_g = np.select([modes == 0, modes == 1], [first, near], default=far)
    key_b = np.select([modes == 0, modes == 1], [first, far], default=near)
    return np.stack([key_g, key_b], axis=1)


def _draw_candidates(
    rng: np.random.Generator, modes: np.ndarray, table: _OffsetTable, grid: int
) -> np.ndarray:
    """One candidate ``(m, 3, 2)`` placement per mode: R uniform, G and B at offsets."""
    reference = rng.integers(0, grid, size=(len(modes), 2))
    keys = _draw_keys(rng, modes, len(table.keys))  # (m, 2)
    choice = rng.integers(0, table.counts[keys])  # (m, 2) offset index within each key
    offsets = table.vectors[keys, choice]  # (m, 2, 2) offsets of G and B
    return np.concatenate([reference[:, None], reference[:, None] + offsets], axis=1)


def _valid(candidates: np.ndarray, grid: int, reject_collinear: bool) -> np.ndarray:
    """Which candidates stay on the grid, keep three distinct cells, and (optionally) are
    not collinear."""
    on_grid = ((candidates >= 0) & (candidates < grid)).all(axis=(1, 2))
    g_off = candidates[:, 1] - candidates[:, 0]  # (m, 2) (drow, dcol) of G from R
    b_off = candidates[:, 2] - candidates[:, 0]
    distinct = (g_off != b_off).any(axis=1)  # G ≠ R and B ≠ R hold since keys are ≥ 1
    ok = on_grid & distinct
    if reject_collinear:
        ok &= g_off[:, 1] * b_off[:, 0] - g_off[:, 0] * b_off[:, 1] != 0  # Δ ≠ 0
    return ok


def _place(config: ThreeCellConfig, rng: np.random.Generator, modes: np.ndarray) -> np.ndarray:
    """Positions ``(n, 3, 2)`` for the given modes, redrawing rejected placements."""
    table = _offset_table(config.grid, config.sq_len_bound)
    positions = np.zeros((len(modes), 3, 2), dtype=np.int64)
    pending = np.arange(len(modes))
    for attempt in range(_MAX_ROUNDS):
        if len(pending) == 0:
            logger.debug("placed %d triples in %d rounds", len(modes), attempt)
            return positions
        candidates = _draw_candidates(rng, modes[pending], table, config.grid)
        ok = _valid(candidates, config.grid, config.reject_collinear)
        positions[pending[ok]] = candidates[ok]
        pending = pending[~ok]
    raise RuntimeError(f"{len(pending)} triples still unplaced after {_MAX_ROUNDS} rounds")


def generate(config: ThreeCellConfig) -> ThreeCellSet:
    """Draw the benchmark: the same ``config`` (seed included) gives the same set.

    Procedure, per image: (1) draw one of three modes with equal probability — equal
    distances, G nearer, G farther; (2) place R uniformly and G, B at integer offsets whose
    squared lengths realise the mode; (3) redraw the placement (the mode is kept) while it
    falls off the grid, puts two cells together, or is collinear.
    """
    rng = np.random.default_rng(config.seed)
    modes = rng.integers(0, len(MODES), size=config.n)
    positions = _place(config, rng, modes)
    labels = labels_for(positions, config.grid, config.vector_sum_rule)
    return ThreeCellSet(config=config, positions=positions, labels=labels)


# --- the set and its images ---------------------------------------------------------------


def _paint(images: np.ndarray, index: np.ndarray, positions: np.ndarray, cell: int) -> None:
    """Set the R, G, B cells of ``images[index]`` to 255 in channels 0, 1, 2, in place."""
    B, C, H, W = images.shape
    grid = H // cell
    tiles = images.reshape(B, C, grid, cell, grid, cell)  # view: (B, 3, g, c, g, c)
    for channel in range(3):
        rows, cols = positions[:, channel, 0], positions[:, channel, 1]
        tiles[index, channel, rows, :, cols, :] = 255


@dataclass(frozen=True, eq=False)
class ThreeCellSet:
    """A generated set (or one split of it): positions, labels and the config that drew it.

    Attributes:
        config: the generating configuration (its ``n`` is the size before splitting).
        positions: ``(n, 3, 2)`` int ``(row, col)`` of R, G, B.
        labels: ``(n, 6)`` uint8 in spec order.
        part: ``all`` for a generated set, else the split this set is.
    """

    config: ThreeCellConfig
    positions: np.ndarray
    labels: np.ndarray
    part: PartName = field(default="all")

    def __post_init__(self) -> None:
        n = len(self.positions)
        _require(
            self.positions.shape == (n, 3, 2),
            f"positions shape {self.positions.shape}: must be (n, 3, 2)",
        )
        _require(
            self.labels.shape == (n, 6),
            f"labels shape {self.labels.shape}: must be ({n}, 6) to match positions",
        )

    def __len__(self) -> int:
        return len(self.positions)

    def split(self, name: SplitName) -> ThreeCellSet:
        """The train, val or test part: consecutive index ranges in the config's proportions.

        Samples are drawn independently, so an index split is already a random split.
        """
        _require(self.part == "all", f"split({name!r}) of the {self.part!r} part: split 'all'")
        _require(name in get_args(SplitName), f"split name {name!r}: must be train/val/test")
        n = len(self)
        n_train = round(self.config.split[0] * n)
        n_val = round(self.config.split[1] * n)
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val)}
        start, stop = bounds.get(name, (n_train + n_val, n))
        return ThreeCellSet(
            config=self.config,
            positions=self.positions[start:stop],
            labels=self.labels[start:stop],
            part=name,
        )

    def render(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 ``(3, H, W)``: pure R, G, B cells on black."""
        _require(0 <= index < len(self), f"index={index}: must be in [0, {len(self)})")
        size = self.config.image_size
        image = np.zeros((1, 3, size, size), dtype=np.uint8)
        _paint(
            image, np.zeros(1, dtype=np.int64), self.positions[index : index + 1], self.config.cell
        )
        return image[0]

    def render_all(self) -> np.ndarray:
        """Every image as uint8 ``(n, 3, H, W)``.

        NOTE: the paper preset needs 10000·3·224² bytes ≈ 1.5 GB here; render on the fly
        (:meth:`render`, :class:`ThreeCellDataset`) for large sets.
        """
        size = self.config.image_size
        images = np.zeros((len(self), 3, size, size), dtype=np.uint8)
        _paint(images, np.arange(len(self)), self.positions, self.config.cell)
        return images


class ThreeCellDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Torch view of a :class:`ThreeCellSet`: ``(image float32 (3, H, W) in [0, 1], labels
    float32 (6,))``, ready for BCE with logits.

    Images are rendered on the fly from positions. ``cache=True`` renders every image once
    into a uint8 array; ``None`` caches only when that array fits in
    :data:`CACHE_LIMIT_BYTES` (the quick preset does, the paper preset does not).
    """

    def __init__(self, samples: ThreeCellSet, cache: bool | None = None) -> None:
        self.samples = samples
        size = samples.config.image_size
        nbytes = len(samples) * 3 * size * size
        if cache is None:
            cache = nbytes <= CACHE_LIMIT_BYTES
            logger.info("Three-Cell %s: cache=%s (%.1f MiB)", samples.part, cache, nbytes / 2**20)
        self._images = samples.render_all() if cache else None
        self._labels = torch.from_numpy(samples.labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.samples.render(index) if self._images is None else self._images[index]
        return torch.from_numpy(image).float().div_(255.0), self._labels[index]


def save_png(samples: ThreeCellSet, directory: Path) -> None:
    """Write one PNG per image and ``labels.csv`` (header ``file,bit0..bit5``, then one row
    per image: its file name and its six bits in spec order)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(samples) - 1)))
    with open(directory / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", *BIT_KEYS])
        for index in range(len(samples)):
            name = f"{index:0{width}d}.png"
            image = samples.render(index).transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
            Image.fromarray(image).save(directory / name)
            writer.writerow([name, *(int(bit) for bit in samples.labels[index])])
    logger.info("wrote %d Three-Cell PNGs to %s", len(samples), directory)
