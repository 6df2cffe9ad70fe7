"""CrossViT with a replaceable PE per branch: timm's CrossVit with the PEs put in their place.

CrossViT runs two branches on one image: the image scaled for each branch, cut into that
branch's patches (at 240 px: 12 px patches on 240 px, 16 px patches on 224 px), so each
branch has its own grid and token width, and gets its own PE. The host adds position in
`_embed`, which this adapter overrides; nothing else changes.

- additive: added to each branch's patch tokens; the class token gets the PE's class
  vector, if any; an image-conditioned PE sees the image as scaled for its branch;
- attention bias and rotary: the self-attention blocks of each branch become
  `PEAttention`s bound to that branch's PE; the cross-attention fusion, where one branch's
  class token reads the other branch's patches, gets no position;
- conditional: applied to each branch's tokens after its first block.

`_embed` scales the image by each branch's ratio of the input actually given, so a model
built at one size runs at another (the branch grids follow; timm's own would rescale any
input to the built size).

Letters: B batch, h and w patch grid of a branch, N = h·w, D branch token width.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.models.crossvit import CrossVit, scale_image
from torch import nn

from loope.models.vit import AttentionPosition, PEAttention, build_host_pe
from loope.pe import (
    AdditivePE,
    AttentionBiasPE,
    ConditionalPE,
    Grid,
    PositionalEmbedding,
    RotaryPE,
)


class PECrossVit(CrossVit):
    """A timm CrossViT whose branches each take position from their own catalogue PE.

    Args:
        pe_name: the registry name of the PE (the same PE kind in every branch).
        pe_options: keyword arguments of that PE.
        **crossvit_kwargs: the host's own arguments (img_size, img_scale, patch_size, ...).
    """

    def __init__(
        self, pe_name: str, pe_options: dict[str, Any] | None = None, **crossvit_kwargs: Any
    ) -> None:
        if crossvit_kwargs.get("multi_conv"):
            raise ValueError("PECrossVit: multi_conv patch stems are not supported; leave it off")
        super().__init__(**crossvit_kwargs)
        self.branch_blocks = self._branch_blocks()
        self.pe = nn.ModuleList()
        self._grids: list[Grid] = []
        for branch, patch_embed in enumerate(self.patch_embed):
            setattr(self, f"pos_embed_{branch}", None)  # position comes from self.pe[branch]
            (height, width), (patch_h, patch_w) = patch_embed.img_size, patch_embed.patch_size
            grid: Grid = (height // patch_h, width // patch_w)
            self._grids.append(grid)
            self.pe.append(
                build_host_pe(
                    pe_name,
                    pe_options,
                    dim=self.embed_dim[branch],
                    grid=grid,
                    patch_size=patch_embed.patch_size[0],
                    num_heads=self.branch_blocks[branch][0].attn.num_heads,
                    depth=len(self.branch_blocks[branch]),
                )
            )
        self._positions: list[AttentionPosition | None] = [None] * self.num_branches
        for branch in range(self.num_branches):
            self._install_pe(branch)

    def _branch_blocks(self) -> list[list[nn.Module]]:
        """The self-attention blocks of each branch, in order through the multi-scale blocks."""
        blocks: list[list[nn.Module]] = [[] for _ in range(self.num_branches)]
        for multi_scale in self.blocks:
            if multi_scale.blocks is None or len(multi_scale.blocks) != self.num_branches:
                raise ValueError("PECrossVit: every multi-scale block needs blocks in each branch")
            for branch, sequence in enumerate(multi_scale.blocks):
                blocks[branch].extend(sequence)
        return blocks

    def _install_pe(self, branch: int) -> None:
        """Bind an attention PE to the branch's blocks, or hook a conditional PE after block 1."""
        pe, blocks = self.pe[branch], self.branch_blocks[branch]
        if isinstance(pe, AttentionBiasPE | RotaryPE):
            position = AttentionPosition(pe, num_prefix_tokens=1, depth=len(blocks))
            for layer, block in enumerate(blocks):
                block.attn = PEAttention.replacing(block.attn)
                block.attn.bind(position, layer)
            self._positions[branch] = position
        elif isinstance(pe, ConditionalPE):
            blocks[0].register_forward_hook(partial(self._condition_tokens, branch))

    def no_weight_decay(self) -> set[str]:
        names = {f"cls_token_{branch}" for branch in range(self.num_branches)}
        for branch, pe in enumerate(self.pe):
            names |= {f"pe.{branch}.{name}" for name in pe.no_weight_decay()}
        return names

    def branch_size(self, branch: int, size: tuple[int, int]) -> tuple[int, int]:
        """The image size branch `branch` sees when the model is given `size` (H, W)."""
        built, scaled = self.img_size, self.img_size_scaled[branch]
        return round(size[0] * scaled[0] / built[0]), round(size[1] * scaled[1] / built[1])

    def _embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        B, _, H, W = x.shape
        branches = []
        for branch, (patch_embed, pe) in enumerate(zip(self.patch_embed, self.pe, strict=True)):
            images = scale_image(x, self.branch_size(branch, (H, W)), self.crop_scale)
            tokens = patch_embed.proj(images)  # B, D, h, w
            grid: Grid = (tokens.shape[-2], tokens.shape[-1])
            tokens = tokens.flatten(2).transpose(1, 2)  # B, D, h, w -> B, N, D
            branches.append(self.pos_drop(self._place(branch, pe, tokens, grid, images)))
        return branches

    def _place(
        self,
        branch: int,
        pe: PositionalEmbedding,
        tokens: torch.Tensor,
        grid: Grid,
        images: torch.Tensor,
    ) -> torch.Tensor:
        """One branch's tokens (B, 1 + N, D): class token first, the PE placed for `grid`."""
        self._grids[branch] = grid
        position = self._positions[branch]
        if position is not None:
            position.prepare(grid)
        cls = getattr(self, f"cls_token_{branch}").expand(tokens.shape[0], -1, -1)  # B, 1, D
        if isinstance(pe, AdditivePE):
            embedding = pe(grid, images if pe.info.image_conditioned else None)
            if embedding.patch is not None:
                tokens = tokens + embedding.patch.to(tokens.dtype)
            if embedding.cls is not None:
                cls = cls + embedding.cls.to(tokens.dtype)
        return torch.cat((cls, tokens), dim=1)

    def _condition_tokens(
        self, branch: int, block: nn.Module, inputs: tuple[Any, ...], tokens: torch.Tensor
    ) -> torch.Tensor:
        """After the branch's first block, its conditional PE rewrites the patch tokens."""
        return self.pe[branch](tokens, self._grids[branch], 1)
