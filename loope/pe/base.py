"""What every positional embedding declares, and the interface an additive PE offers a host.

Letters used in shape comments: B batch, N patch tokens, D token width, h and w the patch
grid's rows and columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

PEKind = Literal["none", "additive", "attention-bias", "rotary", "conditional"]
ClsPolicy = Literal["none", "fixed", "learned", "learned-zero-init"]
GridRule = Literal["recompute", "resample", "zero-context", "unsupported"]

Grid = tuple[int, int]


@dataclass(frozen=True)
class PEInfo:
    """The facts a PE declares about itself, so that hosts and trainers need not guess.

    Attributes:
        kind: where the PE acts: added to tokens, a bias or rotation inside attention, or a
            conditional layer between blocks.
        trainable: whether the PE has parameters the optimiser updates.
        image_conditioned: whether the PE of a patch depends on the image content.
        cls_policy: what the class token receives.
        grid_rule: what happens when the patch grid differs from the one built for.
    """

    kind: PEKind
    trainable: bool
    image_conditioned: bool
    cls_policy: ClsPolicy
    grid_rule: GridRule


@dataclass(frozen=True)
class AdditiveOutput:
    """Embeddings to add: `patch` is (1 or B, N, D); `cls` is (1 or B, 1, D) or None."""

    patch: torch.Tensor | None
    cls: torch.Tensor | None


class PositionalEmbedding(nn.Module):
    """Base of every PE. Subclasses set `info` and implement `forward` for their kind."""

    info: PEInfo

    def __init__(self, dim: int, grid: Grid) -> None:
        super().__init__()
        check_grid(grid)
        if dim < 2 or dim % 2:
            raise ValueError(f"PE width must be a positive even number, got dim={dim}")
        self.dim = dim
        self.grid = grid

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this module) of parameters that skip weight decay."""
        return set()

    def forward(self, grid: Grid, images: torch.Tensor | None = None) -> AdditiveOutput:
        raise NotImplementedError(f"{type(self).__name__} is not an additive PE")


def check_grid(grid: Grid) -> None:
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"patch grid must have at least one row and column, got {rows}x{cols}")
