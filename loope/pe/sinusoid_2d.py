"""Frozen 2-D sinusoidal PEs: the axial one we use, and the summed one kept for comparison.

Both build on the interleaved 1-D sinusoid S_D(x)[2k] = sin(x·ω_k), S_D(x)[2k+1] =
cos(x·ω_k), ω_k = base^(−2k/D). A cell is (i, j) = (row, col).

- Axial (`sinusoid-2d`): E(i, j) = [S_{D/2}(i), S_{D/2}(j)], integer 0-based coordinates:
  the first half of the channels encodes the row, the second half the column. Cells (i, j)
  and (j, i) get different embeddings.
- Summed (`sinusoid-2d-summed`): E(i, j) = S_D(y_i) + S_D(x_j) in the same channels, with
  y_i and x_j the row and column mapped linearly onto [−1, 1]. On a square grid (i, j) and
  (j, i) share an embedding; it exists only to compare with the LOOPE paper's table.

Neither gives the class token an embedding. Both are recomputed for any grid.

Letters: N = h·w patches in row-major order, D token width, h and w grid rows and columns.
"""

from __future__ import annotations

import torch

from loope.pe.base import AdditiveOutput, AdditivePE, Grid, PEInfo
from loope.pe.sinusoid import sinusoid_table

_FROZEN_2D = PEInfo(
    kind="additive",
    trainable=False,
    image_conditioned=False,
    cls_policy="none",
    grid_rule="recompute",
)


def axial_sinusoid_table(grid: Grid, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The axial 2-D sinusoid of every cell, shape (N, D), float64."""
    h, w = grid
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w)  # N: row of each patch
    cols = torch.arange(w, dtype=torch.float64).repeat(h)  # N: column of each patch
    half = dim // 2
    return torch.cat((sinusoid_table(rows, half, base), sinusoid_table(cols, half, base)), -1)


def unit_coordinates(size: int) -> torch.Tensor:
    """`size` evenly spaced coordinates from −1 to 1 (float64); one cell sits at −1."""
    return torch.linspace(-1.0, 1.0, size, dtype=torch.float64)


def summed_sinusoid_table(grid: Grid, dim: int, base: float = 10000.0) -> torch.Tensor:
    """S_D(row) + S_D(col) of every cell, coordinates in [−1, 1], shape (N, D)."""
    h, w = grid
    rows = sinusoid_table(unit_coordinates(h), dim, base)  # h, D
    cols = sinusoid_table(unit_coordinates(w), dim, base)  # w, D
    return (rows[:, None, :] + cols[None, :, :]).reshape(h * w, dim)  # h, w, D -> N, D


class AxialSinusoidPE(AdditivePE):
    """The axial 2-D sinusoid: rows in the first half of the channels, columns in the second.

    Each half is itself an interleaved sin/cos sinusoid, so the width must split into two
    even halves: D divisible by 4.
    """

    info = _FROZEN_2D

    def __init__(self, dim: int, grid: Grid, base: float = 10000.0) -> None:
        super().__init__(dim, grid)
        if dim % 4:
            raise ValueError(
                f"sinusoid-2d needs dim divisible by 4 (two halves of sin/cos pairs), got dim={dim}"
            )
        self.base = base
        self.register_buffer("table", axial_sinusoid_table(grid, dim, base)[None], persistent=False)

    def forward(self, grid: Grid, images: torch.Tensor | None = None) -> AdditiveOutput:
        if grid == self.grid:
            return AdditiveOutput(patch=self.table, cls=None)
        table = axial_sinusoid_table(grid, self.dim, self.base)[None].to(self.table)  # 1, N, D
        return AdditiveOutput(patch=table, cls=None)


class SummedSinusoidPE(AdditivePE):
    """The summed 2-D sinusoid: S(row) + S(col) in the same channels, coordinates in [−1, 1].

    NOTE: symmetric in rows and columns on square grids, so it cannot tell a cell from its
    transpose; use `sinusoid-2d` for a 2-D sinusoid that can.
    """

    info = _FROZEN_2D

    def __init__(self, dim: int, grid: Grid, base: float = 10000.0) -> None:
        super().__init__(dim, grid)
        self.base = base
        table = summed_sinusoid_table(grid, dim, base)[None]  # 1, N, D
        self.register_buffer("table", table, persistent=False)

    def forward(self, grid: Grid, images: torch.Tensor | None = None) -> AdditiveOutput:
        if grid == self.grid:
            return AdditiveOutput(patch=self.table, cls=None)
        table = summed_sinusoid_table(grid, self.dim, self.base)[None].to(self.table)  # 1, N, D
        return AdditiveOutput(patch=table, cls=None)
