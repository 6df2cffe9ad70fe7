"""PESI: how well a positional embedding's similarity structure follows the patch grid.

For every centre cell, the cosine similarity ``E`` of its PE to the PE of every cell of the
``h × w`` grid (the centre included) is compared with the grid distance ``d`` between them:

- ``M_U`` (undirected monotonicity): cells are binned by ``r = round(d)``; Spearman ``ρ``
  between ``r`` and the mean similarity of each bin; ``M_U`` is the mean over centres of
  ``1 − ρ``. Ideal 2: similarity falls strictly with distance.
- ``M_D`` (directed monotonicity): cells are split into ``buckets`` angular sectors around
  the centre; within each sector, Spearman ``ρ`` between ``d`` and ``E`` over its cells. The
  mean ``ρ̄`` is over all sectors, and ``M_D`` is the mean over centres of ``1 − ρ̄``.
- ``A_SU`` (undirected asymmetry): per ``round(d)`` bin, population std over mean of ``E``;
  mean over bins, then over centres. 0 means radially symmetric similarity.

Spearman uses average ranks for ties; a ρ that is undefined (fewer than two values, or one
side constant) counts as 0.

Conventions, each chosen because it reproduces the 1-D sinusoid rows of the LOOPE paper's
PESI table (14×14, D = 768, 60 sectors) to 4 decimals, and each the plain reading of the
definition:

- A cell is ``(i, j) = (row, col)``, a centre ``(x, y) = (row, col)``.
- The sector angle is ``θ = atan2(j − y, i − x)``, column difference first, in ``(−π, π]``;
  sector ``k = floor(θ / (2π / buckets)) mod buckets``. Swapping the arguments of ``atan2``
  changes ``M_D`` in the third decimal, so this is not a free choice.
- The centre counts everywhere: it is the ``r = 0`` bin of ``M_U`` and of ``A_SU`` (where it
  contributes 0, std of one value), and it falls in sector 0 (``atan2(0, 0) = 0``) for
  ``M_D``. Sectors with fewer than two cells count with ``ρ = 0`` in the average. Leaving
  the centre out would give ``M_U`` 1.9466 and ``A_SU`` 0.1331 for the raster sinusoid.
- A bin whose mean similarity is exactly 0 has no std / mean; ``A_SU`` is then NaN (with
  a logged warning) rather than a number that hides the gap.
- ``round`` is round-half-to-even, which never matters: a distance on the grid is the square
  root of an integer and is never ``k + 0.5``.

Shapes: ``h, w`` grid rows and columns, ``N = h * w`` cells in row-major order, ``D`` PE width.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PESI:
    """The three PESI scores of one positional embedding on one grid.

    Attributes:
        M_U: undirected monotonicity, ideal 2 (similarity falls with distance).
        M_D: directed monotonicity along angular sectors, ideal 2.
        A_SU: undirected asymmetry, 0 for radially symmetric similarity.
    """

    M_U: float
    M_D: float
    A_SU: float

    def to_dict(self) -> dict[str, float]:
        """The scores keyed by their names, for JSON reports."""
        return asdict(self)


def cosine_similarity_maps(pe_grid: np.ndarray) -> np.ndarray:
    """Cosine similarity of every centre cell's PE to every cell's PE.

    Returns shape ``(h, w, h, w)``: entry ``[x, y, i, j]`` is the similarity of centre
    ``(x, y)`` to cell ``(i, j)``.
    """
    grid = _check_pe_grid(pe_grid)
    h, w, _ = grid.shape
    return _similarity_matrix(grid).reshape(h, w, h, w)


def pesi(pe_grid: np.ndarray, buckets: int = 60) -> PESI:
    """PESI of the patch PEs laid out on their grid, shape ``(h, w, D)`` without CLS."""
    grid = _check_pe_grid(pe_grid)
    if isinstance(buckets, bool) or not isinstance(buckets, int | np.integer) or buckets < 1:
        raise ValueError(f"buckets={buckets!r} must be an integer >= 1")
    h, w, _ = grid.shape

    similarity = _similarity_matrix(grid)  # (N, N): [centre, cell]
    row_offset, col_offset = _grid_offsets(h, w)  # (N, N) each
    distance = np.hypot(row_offset, col_offset)
    radius = np.rint(distance).astype(np.int64)

    radial_rho = _radial_rho(similarity, radius)  # (N,)
    sector_rho = _sector_rho(similarity, distance, row_offset, col_offset, buckets)  # (N,)
    asymmetry = _radial_asymmetry(similarity, radius)  # (N,)
    return PESI(
        M_U=float(np.mean(1.0 - radial_rho)),
        M_D=float(np.mean(1.0 - sector_rho)),
        A_SU=float(np.mean(asymmetry)),
    )


def _radial_rho(similarity: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Per centre, Spearman ρ between each occupied radius bin and its mean similarity."""
    centre, bin_radius, mean, _ = _radius_bin_stats(similarity, radius)
    return _grouped_spearman(centre, bin_radius.astype(np.float64), mean, similarity.shape[0])


def _sector_rho(
    similarity: np.ndarray,
    distance: np.ndarray,
    row_offset: np.ndarray,
    col_offset: np.ndarray,
    buckets: int,
) -> np.ndarray:
    """Per centre, the mean over all sectors of Spearman ρ between distance and similarity."""
    n_cells = similarity.shape[0]
    angle = np.arctan2(col_offset, row_offset)  # column difference first; centre gives 0
    sector = np.floor(angle / (2.0 * np.pi / buckets)).astype(np.int64) % buckets
    centre = np.arange(n_cells)[:, None]
    group = (centre * buckets + sector).ravel()  # one group per (centre, sector)

    rho = _grouped_spearman(group, distance.ravel(), similarity.ravel(), n_cells * buckets)
    return rho.reshape(n_cells, buckets).mean(axis=1)


def _radial_asymmetry(similarity: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Per centre, the mean over occupied radius bins of std / mean of similarity."""
    n_cells = similarity.shape[0]
    centre, _, mean, std = _radius_bin_stats(similarity, radius)

    undefined = mean == 0
    if np.any(undefined):
        logger.warning(
            "A_SU is undefined (NaN): %d distance bins have mean similarity 0", int(undefined.sum())
        )
    ratio = np.divide(std, mean, out=np.full_like(std, np.nan), where=~undefined)
    return np.bincount(centre, ratio, n_cells) / np.bincount(centre, minlength=n_cells)


def _radius_bin_stats(
    similarity: np.ndarray, radius: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Occupied (centre, radius) bins: centre, radius, mean and population std of similarity.

    Bins are listed by centre, then by radius.
    """
    n_cells, n_bins = similarity.shape[0], int(radius.max()) + 1
    group = (np.arange(n_cells)[:, None] * n_bins + radius).ravel()  # (N*N,)
    values = similarity.ravel()

    count = np.bincount(group, minlength=n_cells * n_bins)
    full_mean = np.bincount(group, values, n_cells * n_bins) / np.maximum(count, 1)
    square_dev = np.bincount(group, (values - full_mean[group]) ** 2, n_cells * n_bins)

    occupied = np.flatnonzero(count)
    centre, bin_radius = np.divmod(occupied, n_bins)
    std = np.sqrt(square_dev[occupied] / count[occupied])
    return centre, bin_radius, full_mean[occupied], std


def _grouped_spearman(group: np.ndarray, x: np.ndarray, y: np.ndarray, n_groups: int) -> np.ndarray:
    """Spearman ρ of ``x`` against ``y`` within each group, 0 where it is undefined.

    ``group`` holds the group id (``0..n_groups-1``) of each pair; the result has one ρ per
    group. Groups with fewer than two pairs, or a constant side, get 0.
    """
    count = np.bincount(group, minlength=n_groups).astype(np.float64)
    middle = ((count + 1.0) / 2.0)[group]  # mean of the ranks 1..n of each group
    rank_x = _grouped_average_ranks(group, x) - middle
    rank_y = _grouped_average_ranks(group, y) - middle

    cov = np.bincount(group, rank_x * rank_y, n_groups)
    var_x = np.bincount(group, rank_x * rank_x, n_groups)
    var_y = np.bincount(group, rank_y * rank_y, n_groups)
    scale = np.sqrt(var_x * var_y)
    defined = scale > 0
    return np.divide(cov, scale, out=np.zeros(n_groups), where=defined)


def _grouped_average_ranks(group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1-based rank of each value within its group, ties sharing the mean of their ranks."""
    order = np.lexsort((values, group))  # by group, then by value
    sorted_group, sorted_values = group[order], values[order]
    position = np.arange(order.size)

    # 1. Where each group starts in the sorted array, and each value's place inside it.
    group_starts = np.r_[True, sorted_group[1:] != sorted_group[:-1]]
    place = position - np.maximum.accumulate(np.where(group_starts, position, 0))
    # 2. Runs of equal values within a group share the mean of their places.
    run_starts = group_starts | np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    run = np.cumsum(run_starts) - 1
    run_place = np.bincount(run, place) / np.bincount(run)
    # 3. Scatter back to the caller's order.
    ranks = np.empty(order.size)
    ranks[order] = run_place[run] + 1.0
    return ranks


def _similarity_matrix(grid: np.ndarray) -> np.ndarray:
    """Cosine similarity between the PEs of all cells, ``(N, N)`` in row-major cell order."""
    h, w, D = grid.shape
    flat = grid.reshape(h * w, D)  # (h, w, D) -> (N, D)
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    return unit @ unit.T


def _grid_offsets(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets ``cell − centre``, each ``(N, N)`` as ``[centre, cell]``."""
    row, col = np.divmod(np.arange(h * w), w)
    return row[None, :] - row[:, None], col[None, :] - col[:, None]


def _check_pe_grid(pe_grid: np.ndarray) -> np.ndarray:
    """``pe_grid`` as float64 after checking its shape and that every PE has a direction."""
    grid = np.asarray(pe_grid, dtype=np.float64)
    if grid.ndim != 3 or 0 in grid.shape:
        raise ValueError(
            f"pe_grid must have shape (h, w, D) with all sizes >= 1 and no CLS row, "
            f"got shape {grid.shape}"
        )
    if not np.all(np.isfinite(grid)):
        raise ValueError("pe_grid must be finite; it holds NaN or infinite values")
    norm = np.linalg.norm(grid, axis=-1)
    if np.any(norm == 0):
        row, col = np.argwhere(norm == 0)[0]
        raise ValueError(
            f"pe_grid has a zero vector at cell (row={row}, col={col}); "
            "cosine similarity needs every PE to be non-zero"
        )
    return grid
