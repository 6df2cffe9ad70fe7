"""Frozen 1-D sinusoidal PEs over a patch order: the raster sinusoid and the paper's "Hilbert".

A patch of rank r (0-based, in the chosen order) sits at position x = r + 1; the class
token sits at position 0. Channels interleave: E(x)[2k] = sin(x·ω_k), E(x)[2k+1] =
cos(x·ω_k), with ω_k = base^(−2k/D).
"""

from __future__ import annotations

import torch

from loope.orders import OrderName, patch_ranks
from loope.pe.base import AdditiveOutput, Grid, PEInfo, PositionalEmbedding


def sinusoid_table(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Interleaved sin/cos embedding of real-valued positions.

    Frozen tables are computed in float64 from float64 positions; learned positions are
    computed in their own precision so that gradients stay cheap.

    Args:
        positions: any shape S of positions (not normalised).
        dim: even embedding width D.
        base: the frequency base.

    Returns:
        a tensor of shape S + (D,).
    """
    dtype = torch.float64 if positions.dtype == torch.float64 else torch.float32
    k = torch.arange(dim // 2, device=positions.device, dtype=torch.float64)
    omega = (base ** (-2.0 * k / dim)).to(dtype)  # D/2
    angles = positions.to(dtype).unsqueeze(-1) * omega  # S, D/2
    table = torch.stack((angles.sin(), angles.cos()), dim=-1)  # S, D/2, 2
    return table.flatten(-2).to(torch.float32)  # S, D


def order_positions(order: OrderName, grid: Grid) -> torch.Tensor:
    """Positions 1..N of the patches (row-major token order) along `order`."""
    ranks = patch_ranks(order, grid[0], grid[1])
    return torch.as_tensor(ranks, dtype=torch.float64) + 1.0


class OrderedSinusoidPE(PositionalEmbedding):
    """A frozen 1-D sinusoid over the ranks of a patch order; recomputed for any grid."""

    info = PEInfo(
        kind="additive",
        trainable=False,
        image_conditioned=False,
        cls_policy="fixed",
        grid_rule="recompute",
    )

    def __init__(
        self, dim: int, grid: Grid, order: OrderName = "raster", base: float = 10000.0
    ) -> None:
        super().__init__(dim, grid)
        self.order: OrderName = order
        self.base = base
        self.register_buffer("table", self._patch_table(grid), persistent=False)
        cls = sinusoid_table(torch.zeros(1, 1), dim, base)
        self.register_buffer("cls_table", cls, persistent=False)  # 1, 1, D

    def _patch_table(self, grid: Grid) -> torch.Tensor:
        return sinusoid_table(order_positions(self.order, grid), self.dim, self.base)[None]

    def forward(self, grid: Grid, images: torch.Tensor | None = None) -> AdditiveOutput:
        patch = self.table if grid == self.grid else self._patch_table(grid).to(self.table)
        return AdditiveOutput(patch=patch, cls=self.cls_table)
