"""The free PE table of the original ViT, and the PE-less baseline."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from loope.pe.base import AdditiveOutput, AdditivePE, Grid, PEInfo

log = logging.getLogger(__name__)


class NoPE(AdditivePE):
    """No positional information at all: the tokens form a set."""

    info = PEInfo(
        kind="none",
        trainable=False,
        image_conditioned=False,
        cls_policy="none",
        grid_rule="recompute",
    )

    def forward(self, grid: Grid, images: torch.Tensor | None = None) -> AdditiveOutput:
        return AdditiveOutput(patch=None, cls=None)


class LearnablePE(AdditivePE):
    """A table of N patch rows plus one CLS row, drawn from N(0, 0.02²).

    On another grid the patch rows are resampled bicubically as an h×w image; the CLS row
    is kept. Both tables skip weight decay.
    """

    info = PEInfo(
        kind="additive",
        trainable=True,
        image_conditioned=False,
        cls_policy="learned",
        grid_rule="resample",
    )

    def __init__(self, dim: int, grid: Grid, std: float = 0.02) -> None:
        super().__init__(dim, grid)
        self.patch = nn.Parameter(torch.randn(1, grid[0] * grid[1], dim) * std)  # 1, N, D
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * std)  # 1, 1, D
        self._resampled_grids: set[Grid] = set()

    def no_weight_decay(self) -> set[str]:
        return {"patch", "cls"}

    def forward(self, grid: Grid, images: torch.Tensor | None = None) -> AdditiveOutput:
        if grid == self.grid:
            return AdditiveOutput(patch=self.patch, cls=self.cls)
        if grid not in self._resampled_grids:
            self._resampled_grids.add(grid)
            log.info("resampling learnable PE from grid %s to %s (bicubic)", self.grid, grid)
        h, w = self.grid
        table = self.patch.reshape(1, h, w, self.dim).permute(0, 3, 1, 2)  # 1, D, h, w
        table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
        patch = table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], self.dim)  # 1, N', D
        return AdditiveOutput(patch=patch, cls=self.cls)
