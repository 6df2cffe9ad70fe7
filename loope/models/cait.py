"""CaiT with a replaceable PE: timm's Cait with the PE put in its place.

CaiT adds position in `forward_features`, right after the patch embedding, to the patch
tokens only: its class token joins late, in the class-attention blocks, so it never gets a
PE. Here `forward_features` is that one place. A PE's own class-token vector (learnable,
loope) is removed, so that no parameter is left without a gradient.

- additive: added to the patch tokens (B, N, D) before the first block;
- attention bias and rotary: the patch blocks' talking-heads attention is a
  `PETalkingHeadAttn`; the class-attention blocks get no position (the patch tokens they
  read already carry it);
- conditional: applied to the patch tokens after the first block.

Letters: B batch, h and w patch grid, N = h·w, D token width, heads attention heads, Dh
head width.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import torch
from timm.layers import PatchEmbed
from timm.models.cait import Cait, TalkingHeadAttn
from torch import nn
from torch.utils.checkpoint import checkpoint

from loope.models.vit import AttentionPosition, TakesPosition, build_host_pe
from loope.pe import AdditivePE, AttentionBiasPE, ConditionalPE, Grid, RotaryPE, pe_info

log = logging.getLogger(__name__)


class PETalkingHeadAttn(TakesPosition, TalkingHeadAttn):
    """CaiT's talking-heads attention that also applies the host PE's bias or rotation.

    Queries and keys are turned before their product; the bias is added after the heads
    are mixed, right before the softmax, so head i's bias reaches head i's weights.
    Same parameters as the parent; unbound it behaves exactly like it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.position is None:
            return super().forward(x)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)  # B,N,3,heads,Dh
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # B, heads, N, Dh each
        q, k = self.position.rotate(q, k, self.layer)

        logits = (q * self.scale) @ k.transpose(-2, -1)  # B, heads, N, N
        logits = self.proj_l(logits.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # mix heads
        bias = self.position.logit_bias(None, logits.dtype)  # heads, N, N
        if bias is not None:
            logits = logits + bias
        attn = self.proj_w(logits.softmax(-1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attn = self.attn_drop(attn)

        x = (attn @ v).transpose(1, 2).reshape(B, N, C)  # B, N, heads·Dh
        return self.proj_drop(self.proj(x))


class PECait(Cait):
    """A timm CaiT whose patch tokens get their position from a catalogue PE.

    Args:
        pe_name: the registry name of the PE.
        pe_options: keyword arguments of that PE.
        **cait_kwargs: the host's own arguments (img_size, patch_size, embed_dim, depth, ...).
    """

    def __init__(
        self, pe_name: str, pe_options: dict[str, Any] | None = None, **cait_kwargs: Any
    ) -> None:
        if pe_info(pe_name).kind in ("attention-bias", "rotary"):
            if cait_kwargs.get("attn_block", PETalkingHeadAttn) is not PETalkingHeadAttn:
                raise ValueError(f"PE {pe_name!r} installs its own attn_block; do not pass it")
            cait_kwargs["attn_block"] = PETalkingHeadAttn
        any_size = partial(PatchEmbed, strict_img_size=False, output_fmt="NHWC")
        super().__init__(patch_layer=any_size, **cait_kwargs)
        self.pos_embed = None  # the host's table: position comes from self.pe

        grid: Grid = tuple(self.patch_embed.grid_size)
        self.pe = build_host_pe(
            pe_name,
            pe_options,
            dim=self.embed_dim,
            grid=grid,
            patch_size=self.patch_embed.patch_size[0],
            num_heads=self.blocks[0].attn.num_heads,
            depth=len(self.blocks),
        )
        self._grid: Grid = grid
        self._attention_position: AttentionPosition | None = None
        self._drop_class_vector()
        self._install_pe()

    def _drop_class_vector(self) -> None:
        """Remove the PE's learned class-token vector: CaiT's class token joins late."""
        if isinstance(getattr(self.pe, "cls", None), nn.Parameter):
            self.pe.cls = None  # NOTE: relies on the PE keeping its class vector as `cls`
            log.info(
                "CaiT: removed %s's class-token vector (the class token joins late)",
                type(self.pe).__name__,
            )

    def _install_pe(self) -> None:
        """Hand an attention PE to every patch block, or a conditional one to block 1."""
        if isinstance(self.pe, AttentionBiasPE | RotaryPE):
            position = AttentionPosition(self.pe, num_prefix_tokens=0, depth=len(self.blocks))
            for layer, block in enumerate(self.blocks):
                block.attn.bind(position, layer)
            self._attention_position = position
        elif isinstance(self.pe, ConditionalPE):
            self.blocks[0].register_forward_hook(self._condition_tokens)

    def no_weight_decay(self) -> set[str]:
        host = super().no_weight_decay() - {"pos_embed"}
        present = dict(self.pe.named_parameters())
        return host | {f"pe.{name}" for name in self.pe.no_weight_decay() if name in present}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self._pos_embed(self.patch_embed(x), x)  # B, N, D
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for block in self.blocks:
                tokens = checkpoint(block, tokens, use_reentrant=False)
        else:
            tokens = self.blocks(tokens)
        return self.norm(self.forward_cls(tokens))  # B, 1 + N, D

    def forward_intermediates(self, *args: Any, **kwargs: Any) -> Any:
        # NOTE: timm's version adds its own table; not rewritten here, so refused.
        raise NotImplementedError("PECait: forward_intermediates is not supported with a PE")

    def _pos_embed(self, x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, h, w, D) with the PE added, flattened to (B, N, D)."""
        B, h, w, D = x.shape
        tokens = x.reshape(B, h * w, D)  # B, h, w, D -> B, N, D
        self._grid = (h, w)
        if self._attention_position is not None:
            self._attention_position.prepare(self._grid)
        if isinstance(self.pe, AdditivePE):
            conditioned = self.pe.info.image_conditioned
            patch = self.pe(self._grid, images if conditioned else None).patch
            if patch is not None:
                tokens = tokens + patch.to(tokens.dtype)
        return self.pos_drop(tokens)

    def _condition_tokens(
        self, block: nn.Module, inputs: tuple[Any, ...], tokens: torch.Tensor
    ) -> torch.Tensor:
        """After the first block, the conditional PE rewrites the patch tokens."""
        return self.pe(tokens, self._grid, 0)
