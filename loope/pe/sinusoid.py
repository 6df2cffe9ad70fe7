"""Frozen 1-D sinusoidal PEs over a patch order: the raster sinusoid and the paper's "Hilbert".

A patch of rank r (0-based, in the chosen order) sits at position x = r + 1; the class
token sits at position 0. Channels interleave: E(x)[2k] = sin(x·ω_k), E(x)[2k+1] =
cos(x·ω_k), with ω_k = base^(−2k/D).
"""

from __future__ import annotations

import torch

from loope.orders import OrderName, patch_ranks
from loope.pe.base import AdditiveOutput, AdditivePE, Grid, PEInfo


def sinusoid_table(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Interleaved sin/cos embedding of real-valued positions.

    Frozen tables are computed and returned in float64 from float64 positions, so that
    analyses such as PESI see them exactly (hosts cast them to their token precision);
    learned positions are computed in float32 so that gradients stay cheap.

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
    return table.flatten(-2)  # S, D


def quarter_turn(table: torch.Tensor) -> torch.Tensor:
    """The table turned by a quarter period: (cos(xω), −sin(xω)) where E has (sin, cos).

    It is dE/dx divided by ω, the second term of the angle-addition rule.
    """
    pairs = table.unflatten(-1, (-1, 2))  # S, D/2, 2
    sin_x, cos_x = pairs.unbind(-1)
    return torch.stack((cos_x, -sin_x), dim=-1).flatten(-2)  # S, D


def shift_sinusoid(
    table: torch.Tensor,
    shift: torch.Tensor,
    dim: int,
    base: float = 10000.0,
    turned: torch.Tensor | None = None,
) -> torch.Tensor:
    """E(x + s) from a table of E(x) and a shift s, by the angle-addition rule.

    sin((x + s)ω) = sin(xω)cos(sω) + cos(xω)sin(sω), and likewise for the cosine, which
    on interleaved channels reads E(x + s) = E(x)·cos(sω) + T(x)·sin(sω) with T the
    `quarter_turn` of E. The large angles xω stay as precise as the frozen table; only the
    small angles sω are computed in the shift's precision. A zero shift gives back `table`
    exactly.

    Args:
        table: E(x), shape S + (D,), interleaved sin/cos.
        shift: s, shape broadcastable to S.
        dim: D.
        base: the frequency base of `table`.
        turned: `quarter_turn(table)`, when the caller keeps it (it is computed otherwise).

    Returns:
        E(x + s), shape broadcast(S, shift) + (D,).
    """
    turned = quarter_turn(table) if turned is None else turned
    k = torch.arange(dim // 2, device=shift.device, dtype=torch.float64)
    omega = (base ** (-2.0 * k / dim)).repeat_interleave(2).to(shift.dtype)  # D
    angles = shift.unsqueeze(-1) * omega  # S, D: each ω twice, for its sin and cos channel
    return table * angles.cos() + turned * angles.sin()


def order_positions(order: OrderName, grid: Grid) -> torch.Tensor:
    """Positions 1..N of the patches (row-major token order) along `order`."""
    ranks = patch_ranks(order, grid[0], grid[1])
    return torch.as_tensor(ranks, dtype=torch.float64) + 1.0


class OrderedSinusoidPE(AdditivePE):
    """A frozen 1-D sinusoid over the ranks of a patch order; recomputed for any grid.

    Any order of `loope.orders` may be chosen; one that is undefined on a grid (the
    classical Hilbert curve off 2^k squares) is refused there with the order's own error.
    """

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
        cls = sinusoid_table(torch.zeros(1, 1, dtype=torch.float64), dim, base)
        self.register_buffer("cls_table", cls, persistent=False)  # 1, 1, D

    def _patch_table(self, grid: Grid) -> torch.Tensor:
        return sinusoid_table(order_positions(self.order, grid), self.dim, self.base)[None]

    def forward(self, grid: Grid, images: torch.Tensor | None = None) -> AdditiveOutput:
        patch = self.table if grid == self.grid else self._patch_table(grid).to(self.table)
        return AdditiveOutput(patch=patch, cls=self.cls_table)
