"""CPVT's conditional PE: a depth-wise convolution over the patch grid, after a block.

After Chu et al., "Conditional Positional Encodings for Vision Transformers": the patch
tokens are laid back on their grid, passed through a depth-wise 3 × 3 convolution with
zero padding, and added back (residual). Zero padding lets a token tell how far it is from
the border, which is where the position comes from. Prefix tokens bypass the convolution.
The host applies it after its first block. It works on any grid as it is.

Letters: B batch, T = prefix + N tokens, N = h·w patches, D token width, h and w grid.
"""

from __future__ import annotations

import torch
from torch import nn

from loope.pe.base import ConditionalPE, Grid, PEInfo


class ConvPositionPE(ConditionalPE):
    """CPVT's position generator: tokens + depth-wise conv(tokens) on the patch grid.

    The convolution's weights decay like any convolution's; its bias, being 1-D, is
    exempt in the usual way, so nothing is listed in `no_weight_decay`.
    """

    info = PEInfo(
        kind="conditional",
        trainable=True,
        image_conditioned=True,
        cls_policy="none",
        grid_rule="recompute",
    )

    def __init__(self, dim: int, grid: Grid, kernel_size: int = 3) -> None:
        super().__init__(dim, grid)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, tokens: torch.Tensor, grid: Grid, num_prefix_tokens: int) -> torch.Tensor:
        prefix, patches = tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:]
        B, N, D = patches.shape
        h, w = grid
        if h * w != N:
            raise ValueError(f"got {N} patch tokens for a {h}x{w} grid; tokens must not be dropped")
        image = patches.transpose(1, 2).reshape(B, D, h, w)  # B, N, D -> B, D, h, w
        image = image + self.conv(image)
        patches = image.flatten(2).transpose(1, 2)  # B, D, h, w -> B, N, D
        return torch.cat((prefix, patches), dim=1)  # B, T, D
