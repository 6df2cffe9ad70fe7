"""What every positional embedding declares, and the interface each kind offers a host.

A PE acts in one of four places, and each place has its own small interface:

- additive (`AdditivePE`): embeddings added to the tokens once, at the encoder input;
- attention bias (`AttentionBiasPE`): a per-head bias added to the attention logits;
- rotary (`RotaryPE`): a rotation of every query and key by an angle that depends on the
  patch's cell, so that their dot product depends only on the offset between cells;
- conditional (`ConditionalPE`): a layer that rewrites the patch tokens after a block.

Prefix tokens (the class token and any register tokens) come first in the sequence. Only
additive PEs may give them an embedding; the other kinds leave them untouched.

Letters used in shape comments: B batch, N patch tokens, T = prefix + N tokens, D token
width, h and w the patch grid's rows and columns, heads attention heads, Dh head width, L
attention layers.
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
        cls_policy: what the class token receives: nothing (`none`), a fixed vector, a
            learned vector, or a learned vector that starts at zero.
        grid_rule: what happens when the patch grid differs from the one built for:
            computed afresh, resampled from the learned table, evaluated without the
            image-dependent part, or refused.
    """

    kind: PEKind
    trainable: bool
    image_conditioned: bool
    cls_policy: ClsPolicy
    grid_rule: GridRule


@dataclass(frozen=True)
class AdditiveOutput:
    """Embeddings to add: `patch` is (1 or B, N, D); `cls` is (1 or B, 1, D) or None.

    Frozen tables may come in float64; the host casts them to the precision of its tokens.
    """

    patch: torch.Tensor | None
    cls: torch.Tensor | None


class PositionalEmbedding(nn.Module):
    """Base of every PE: its width, the grid it was built for, and what it declares.

    Subclasses derive from one of the kind interfaces below, set `info`, and list their
    weight-decay exemptions in `no_weight_decay`.
    """

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


class AdditivePE(PositionalEmbedding):
    """A PE added to the tokens at the encoder input."""

    def forward(self, grid: Grid, images: torch.Tensor | None = None) -> AdditiveOutput:
        """Embeddings for the patches of `grid`; `images` (B, C, H, W) if image-conditioned."""
        raise NotImplementedError


class AttentionBiasPE(PositionalEmbedding):
    """A PE that adds a per-head bias to the attention logits between patches."""

    def __init__(self, dim: int, grid: Grid, num_heads: int) -> None:
        super().__init__(dim, grid)
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must be >= 1 and divide dim={dim}")
        self.num_heads = num_heads

    def forward(self, grid: Grid) -> torch.Tensor:
        """Logit bias between the patches of `grid`, shape (heads, N, N): [head, query, key]."""
        raise NotImplementedError


class RotaryPE(PositionalEmbedding):
    """A PE that rotates queries and keys of patch tokens, pair of channels by pair.

    Channels (2m, 2m+1) of a head form pair m and turn by angle θ_m(cell):
    (a, b) → (a cos θ − b sin θ, a sin θ + b cos θ). Prefix tokens are never rotated.
    """

    def __init__(self, dim: int, grid: Grid, num_heads: int) -> None:
        super().__init__(dim, grid)
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must be >= 1 and divide dim={dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads

    def forward(self, grid: Grid) -> torch.Tensor:
        """Rotation angles of every patch of `grid`, shape (L or 1, heads or 1, N, Dh/2)."""
        raise NotImplementedError


class ConditionalPE(PositionalEmbedding):
    """A PE computed from the tokens themselves, applied by the host after a block."""

    def forward(self, tokens: torch.Tensor, grid: Grid, num_prefix_tokens: int) -> torch.Tensor:
        """The tokens (B, T, D) with position written into their patch part."""
        raise NotImplementedError


def rotate_pairs(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_prefix_tokens: int
) -> torch.Tensor:
    """Rotate the patch tokens of queries or keys `x` (B, heads, T, Dh); prefix tokens stay.

    `cos` and `sin` are (heads or 1, N, Dh/2), from a `RotaryPE`'s angles.
    """
    prefix, patches = x[..., :num_prefix_tokens, :], x[..., num_prefix_tokens:, :]
    pairs = patches.unflatten(-1, (-1, 2))  # B, heads, N, Dh/2, 2
    a, b = pairs.unbind(-1)  # B, heads, N, Dh/2 each
    turned = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)  # B, heads, N, Dh/2, 2
    return torch.cat((prefix, turned.flatten(-2)), dim=-2)  # B, heads, T, Dh


def patch_embedding_grid(pe: PositionalEmbedding, grid: Grid) -> torch.Tensor:
    """The PE of every patch of `grid` laid out as (h, w, D), without the class token.

    This is the input of PESI and of the similarity maps. An image-conditioned additive PE
    is evaluated without an image (LOOPE: X_C = 0). PEs that act inside attention or on
    the tokens have no embedding per patch, and are refused with the reason.
    """
    check_grid(grid)
    if not isinstance(pe, AdditivePE) or pe.info.kind != "additive":
        raise ValueError(
            f"{type(pe).__name__} is a {pe.info.kind!r} PE: it gives no embedding per patch, "
            "so PESI and similarity maps apply only to additive PEs"
        )
    with torch.no_grad():
        patch = pe(grid).patch
    assert patch is not None, f"{type(pe).__name__} declares kind 'additive' but adds nothing"
    return patch[0].detach().reshape(grid[0], grid[1], pe.dim)  # 1, N, D -> h, w, D


def check_grid(grid: Grid) -> None:
    rows, cols = grid
    if rows < 1 or cols < 1:
        raise ValueError(f"patch grid must have at least one row and column, got {rows}x{cols}")
