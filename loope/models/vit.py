"""ViT and DeiT with a replaceable PE: timm's VisionTransformer with one override.

The host is built without a position table (`pos_embed="none"`) and with a dynamic image
size, so the patch embedding hands over tokens on their grid (B, h, w, D). The adapter
overrides `_pos_embed`, the one place the host puts position in; image-conditioned PEs
read the image that `forward_features` received.

Letters: B batch, h and w patch grid, N = h·w, D token width.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from loope.pe import PositionalEmbedding, build_pe


class PEVisionTransformer(VisionTransformer):
    """A timm ViT whose position comes from a catalogue PE.

    Args:
        pe_name: the registry name of the PE.
        pe_options: keyword arguments of that PE.
        **vit_kwargs: the host's own arguments (img_size, patch_size, embed_dim, depth, ...).
    """

    def __init__(
        self, pe_name: str, pe_options: dict[str, Any] | None = None, **vit_kwargs: Any
    ) -> None:
        super().__init__(pos_embed="none", dynamic_img_size=True, **vit_kwargs)
        self.pe: PositionalEmbedding = build_pe(
            pe_name,
            dim=self.embed_dim,
            grid=tuple(self.patch_embed.grid_size),
            patch_size=self.patch_embed.patch_size[0],
            **(pe_options or {}),
        )
        self._images: torch.Tensor | None = None

    def no_weight_decay(self) -> set[str]:
        host = super().no_weight_decay()
        return host | {f"pe.{name}" for name in self.pe.no_weight_decay()}

    def forward_features(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self._images = x if self.pe.info.image_conditioned else None
        try:
            return super().forward_features(x, **kwargs)
        finally:
            self._images = None

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        B, h, w, D = x.shape
        tokens = x.reshape(B, h * w, D)  # B, N, D
        embedding = self.pe((h, w), self._images)
        if embedding.patch is not None:
            tokens = tokens + embedding.patch
        if self.cls_token is None:
            return self.pos_drop(tokens)
        cls = self.cls_token.expand(B, -1, -1)  # B, 1, D
        if embedding.cls is not None:
            cls = cls + embedding.cls
        return self.pos_drop(torch.cat((cls, tokens), dim=1))  # B, 1 + N, D
