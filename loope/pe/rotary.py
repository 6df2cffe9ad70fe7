"""2-D rotary PEs: RoPE-Axial (frozen) and RoPE-Mixed (learned frequencies).

After Heo et al. (2024), "Rotary Position Embedding for Vision Transformer". A patch at
cell (i, j) = (row, col), integer and 0-based, turns channel pair m of every head's query
and key by an angle θ_m(i, j) that is linear in (i, j); the dot product of a turned query
and a turned key then depends only on the offset between their cells. Prefix tokens (the
class token) are never turned. Both PEs are recomputed for any grid.

- `rope-axial`: the first half of each head's pairs turn with the row, the second half
  with the column, at frequencies ω_t = base^(−4t/Dh), t < Dh/4, base 100.
- `rope-mixed`: every pair has a learned 2-D frequency (f_row, f_col), so θ = i·f_row +
  j·f_col mixes both axes. At the start, for each layer and head a random direction φ is
  drawn, and magnitude ω_t (base 10) is placed along φ for pairs t < Dh/4 and along
  φ + π/2 for the others. The frequencies skip weight decay.

Letters: N = h·w patches in row-major order, heads attention heads, Dh head width, L
attention layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from loope.pe.base import Grid, PEInfo, RotaryPE


def axial_frequencies(head_dim: int, base: float) -> torch.Tensor:
    """ω_t = base^(−4t/Dh) for t < Dh/4, float64."""
    t = torch.arange(head_dim // 4, dtype=torch.float64)
    return base ** (-4.0 * t / head_dim)


def cell_indices(grid: Grid) -> torch.Tensor:
    """Integer (row, col) of every cell as float64, shape (N, 2), row-major."""
    h, w = grid
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w)  # N
    cols = torch.arange(w, dtype=torch.float64).repeat(h)  # N
    return torch.stack((rows, cols), dim=-1)  # N, 2


def _check_head_dim(name: str, head_dim: int) -> None:
    if head_dim % 4:
        raise ValueError(
            f"{name} needs a head width divisible by 4 (pairs split between row and column), "
            f"got head_dim={head_dim}"
        )


class AxialRotaryPE(RotaryPE):
    """2-D RoPE with fixed frequencies: half the pairs follow the row, half the column."""

    info = PEInfo(
        kind="rotary",
        trainable=False,
        image_conditioned=False,
        cls_policy="none",
        grid_rule="recompute",
    )

    def __init__(self, dim: int, grid: Grid, num_heads: int, base: float = 100.0) -> None:
        super().__init__(dim, grid, num_heads)
        _check_head_dim("rope-axial", self.head_dim)
        self.base = base
        self.register_buffer("angles", self._angles(grid), persistent=False)  # 1, 1, N, Dh/2

    def _angles(self, grid: Grid) -> torch.Tensor:
        omega = axial_frequencies(self.head_dim, self.base)  # Dh/4
        cells = cell_indices(grid)  # N, 2
        by_row, by_col = cells[:, :1] * omega, cells[:, 1:] * omega  # N, Dh/4 each
        return torch.cat((by_row, by_col), dim=-1).float()[None, None]  # 1, 1, N, Dh/2

    def forward(self, grid: Grid) -> torch.Tensor:
        if grid == self.grid:
            return self.angles
        return self._angles(grid).to(self.angles)


def initial_mixed_frequencies(
    layers: int, num_heads: int, head_dim: int, base: float
) -> torch.Tensor:
    """RoPE-Mixed's starting frequencies, shape (L, heads, Dh/2, 2) as (f_row, f_col)."""
    magnitude = axial_frequencies(head_dim, base).float().repeat(2)  # Dh/2: ω_t twice
    phi = torch.rand(layers, num_heads, 1) * 2 * math.pi  # L, heads, 1
    quarter = head_dim // 4
    direction = torch.cat(
        (phi.expand(-1, -1, quarter), (phi + math.pi / 2).expand(-1, -1, quarter)), -1
    )  # L, heads, Dh/2
    unit = torch.stack((direction.cos(), direction.sin()), dim=-1)  # L, heads, Dh/2, 2
    return unit * magnitude[:, None]


class MixedRotaryPE(RotaryPE):
    """2-D RoPE with a learned frequency vector per pair, head and (by default) layer.

    Args:
        dim: token width D.
        grid: the grid built for (only its cells are cached).
        num_heads: attention heads of the host.
        depth: attention layers of the host; one set of frequencies each when `per_layer`.
        base: base of the initial magnitudes.
        per_layer: one set per layer (RoPE-ViT) or one set shared by all layers.
    """

    info = PEInfo(
        kind="rotary",
        trainable=True,
        image_conditioned=False,
        cls_policy="none",
        grid_rule="recompute",
    )

    def __init__(
        self,
        dim: int,
        grid: Grid,
        num_heads: int,
        depth: int = 1,
        base: float = 10.0,
        per_layer: bool = True,
    ) -> None:
        super().__init__(dim, grid, num_heads)
        _check_head_dim("rope-mixed", self.head_dim)
        layers = depth if per_layer else 1
        start = initial_mixed_frequencies(layers, num_heads, self.head_dim, base)
        self.frequencies = nn.Parameter(start)  # L, heads, Dh/2, 2
        self.register_buffer("cells", cell_indices(grid).float(), persistent=False)  # N, 2

    def no_weight_decay(self) -> set[str]:
        return {"frequencies"}

    def forward(self, grid: Grid) -> torch.Tensor:
        cells = self.cells if grid == self.grid else cell_indices(grid).to(self.cells)
        return torch.einsum("nc,lhmc->lhnm", cells, self.frequencies)  # L, heads, N, Dh/2
