"""Swin with a replaceable window PE: timm's SwinTransformer with the PE put in its place.

Swin has no absolute position: its one place for position is the window attention, which
adds a learned relative bias between the cells of a window. This adapter gives that place
to a catalogue PE built on the window grid, one PE per stage (stages differ in width and
heads): an attention-bias PE replaces the bias, a rotary PE turns queries and keys by
their cell in the window (within a window, cell offsets are true offsets in the image,
shifted or not), and `none` leaves attention without position.

Additive and conditional PEs would need a place Swin does not have (tokens at the input,
or a grid of tokens between blocks of a fixed layout), so they are declared unsupported
(`UNSUPPORTED_KINDS`) rather than bolted on.

Letters: B' = batch·windows, N = window cells, C token width, heads attention heads, Dh
head width.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.swin_transformer import SwinTransformer, WindowAttention
from torch import nn

from loope.models.vit import AttentionPosition, TakesPosition, attend, build_host_pe
from loope.pe import AttentionBiasPE, Grid, PEKind, RotaryPE, pe_info

UNSUPPORTED_KINDS: dict[PEKind, str] = {
    "additive": "Swin has no absolute position to replace; use an attention-bias or rotary PE",
    "conditional": "Swin has no token grid between blocks of a fixed layout to condition on",
}
"""PE kinds Swin cannot host, with the reason."""


class PEWindowAttention(TakesPosition, WindowAttention):
    """Swin's window attention taking its bias or rotation from a stage PE, not its own table."""

    @classmethod
    def replacing(cls, attn: WindowAttention) -> PEWindowAttention:
        """A `PEWindowAttention` holding the projections of `attn`, without its bias table."""
        head_dim = attn.qkv.out_features // 3 // attn.num_heads
        new = cls(
            attn.dim, attn.num_heads, head_dim=head_dim, window_size=attn.window_size,
            attn_drop=attn.attn_drop.p,
        )  # fmt: skip
        new.qkv, new.proj, new.proj_drop = attn.qkv, attn.proj, attn.proj_drop
        new.relative_position_bias_table = None  # position comes from the stage PE
        return new

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, _ = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1)  # B', N, 3, heads, Dh
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # B', heads, N, Dh each
        bias = None  # unbound (PE `none`): attention without position
        if self.position is not None:
            q, k = self.position.rotate(q, k, self.layer)
            bias = self.position.logit_bias(None, q.dtype)  # heads, N, N or None
        if mask is not None:  # windows, N, N: -100 between cells a shift brought together
            windows = mask.shape[0]
            mask = mask.to(q.dtype).view(1, windows, 1, N, N)
            mask = mask.expand(B_ // windows, -1, self.num_heads, -1, -1).reshape(B_, -1, N, N)
            bias = mask if bias is None else bias + mask  # B', heads, N, N
        dropout = self.attn_drop.p if self.training else 0.0
        x = attend(q, k, v, bias, dropout)  # B', heads, N, Dh

        x = x.transpose(1, 2).reshape(B_, N, -1)  # B', heads, N, Dh -> B', N, heads·Dh
        return self.proj_drop(self.proj(x))


class PESwinTransformer(SwinTransformer):
    """A timm Swin whose window attention takes position from one catalogue PE per stage.

    Args:
        pe_name: the registry name of the PE (kind attention-bias, rotary or none).
        pe_options: keyword arguments of that PE.
        **swin_kwargs: the host's own arguments (img_size, patch_size, embed_dim, depths, ...).
    """

    def __init__(
        self, pe_name: str, pe_options: dict[str, Any] | None = None, **swin_kwargs: Any
    ) -> None:
        kind = pe_info(pe_name).kind
        if kind in UNSUPPORTED_KINDS:
            raise ValueError(f"PE {pe_name!r} ({kind}) on Swin: {UNSUPPORTED_KINDS[kind]}")
        super().__init__(dynamic_img_size=True, **swin_kwargs)
        self.pe = nn.ModuleList()
        self._positions: list[AttentionPosition] = []
        for stage in self.layers:
            self._install_stage_pe(stage, pe_name, pe_options)

    def _install_stage_pe(
        self, stage: nn.Module, pe_name: str, pe_options: dict[str, Any] | None
    ) -> None:
        """Build the stage's PE on its window grid and bind it to every block's attention."""
        first = stage.blocks[0].attn
        window: Grid = tuple(first.window_size)
        pe = build_host_pe(
            pe_name,
            pe_options,
            dim=first.num_heads * (first.qkv.out_features // 3 // first.num_heads),
            grid=window,
            patch_size=self.patch_embed.patch_size[0],
            num_heads=first.num_heads,
            depth=len(stage.blocks),
        )
        position = None
        if isinstance(pe, AttentionBiasPE | RotaryPE):
            position = AttentionPosition(pe, num_prefix_tokens=0, depth=len(stage.blocks))
            self._positions.append(position)
        for layer, block in enumerate(stage.blocks):
            if tuple(block.attn.window_size) != window:
                raise ValueError(f"Swin stage mixes window sizes {window} and {block.window_size}")
            block.attn = PEWindowAttention.replacing(block.attn)
            if position is not None:
                block.attn.bind(position, layer)
        self.pe.append(pe)

    def no_weight_decay(self) -> set[str]:
        names: set[str] = set()
        for stage, pe in enumerate(self.pe):
            names |= {f"pe.{stage}.{name}" for name in pe.no_weight_decay()}
        return names

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for position in self._positions:
            position.prepare(position.pe.grid)  # the window grid, whatever the image size
        return super().forward_features(x)
