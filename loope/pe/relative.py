"""Learned relative-position bias on the attention logits, in the style of Swin.

Every head has a table with one learned bias per 2-D offset between a query patch and a
key patch: (2h − 1)(2w − 1) offsets on an h × w grid. The bias of the pair (query, key) is
the table entry of (Δrow, Δcol) = (row_q − row_k, col_q − col_k). The class token and any
other prefix token get no bias. The table starts from N(0, 0.02²) truncated at ±2σ and
skips weight decay.

On another grid the table, seen as a (2h − 1) × (2w − 1) image per head, is resampled
bicubically with its corners and centre pinned (zero offset stays zero offset); that is
logged once per grid.

Letters: N = h·w patches in row-major order, heads attention heads, R = (2h−1)(2w−1).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from loope.pe.base import AttentionBiasPE, Grid, PEInfo

log = logging.getLogger(__name__)


def relative_offset_index(grid: Grid) -> torch.Tensor:
    """Index into the offset table of every (query, key) pair, shape (N, N), int64.

    Offset (Δrow, Δcol) maps to (Δrow + h − 1)·(2w − 1) + (Δcol + w − 1).
    """
    h, w = grid
    rows = torch.arange(h).repeat_interleave(w)  # N
    cols = torch.arange(w).repeat(h)  # N
    d_row = rows[:, None] - rows[None, :] + (h - 1)  # N, N in [0, 2h−2]
    d_col = cols[:, None] - cols[None, :] + (w - 1)  # N, N in [0, 2w−2]
    return d_row * (2 * w - 1) + d_col


class RelativeBiasPE(AttentionBiasPE):
    """A learned bias per head and per 2-D offset between patches (Swin's relative bias)."""

    info = PEInfo(
        kind="attention-bias",
        trainable=True,
        image_conditioned=False,
        cls_policy="none",
        grid_rule="resample",
    )

    def __init__(self, dim: int, grid: Grid, num_heads: int, std: float = 0.02) -> None:
        super().__init__(dim, grid, num_heads)
        h, w = grid
        self.table = nn.Parameter(torch.empty((2 * h - 1) * (2 * w - 1), num_heads))  # R, heads
        nn.init.trunc_normal_(self.table, std=std, a=-2 * std, b=2 * std)
        self.register_buffer("index", relative_offset_index(grid), persistent=False)  # N, N
        self._resampled_grids: set[Grid] = set()

    def no_weight_decay(self) -> set[str]:
        return {"table"}

    def forward(self, grid: Grid) -> torch.Tensor:
        if grid == self.grid:
            table, index = self.table, self.index
        else:
            table = self._resampled_table(grid)
            index = relative_offset_index(grid).to(self.index.device)
        bias = table[index]  # N, N, heads
        return bias.permute(2, 0, 1)  # heads, N, N

    def _resampled_table(self, grid: Grid) -> torch.Tensor:
        if grid not in self._resampled_grids:
            self._resampled_grids.add(grid)
            log.info("resampling relative-bias table from grid %s to %s (bicubic)", self.grid, grid)
        rows, cols = 2 * self.grid[0] - 1, 2 * self.grid[1] - 1
        new_h, new_w = 2 * grid[0] - 1, 2 * grid[1] - 1
        image = self.table.T.reshape(1, self.num_heads, rows, cols)  # 1, heads, 2h−1, 2w−1
        image = F.interpolate(image, size=(new_h, new_w), mode="bicubic", align_corners=True)
        return image.reshape(self.num_heads, new_h * new_w).T  # R', heads
