"""ViT and DeiT with a replaceable PE: timm's VisionTransformer with the PE put in its place.

The host is built without a position table (`pos_embed="none"`) and with a dynamic image
size, so the patch embedding hands over tokens on their grid (B, h, w, D). Where the PE
goes depends on its kind:

- additive: `_pos_embed`, the one place the host puts position in, adds it to the tokens;
  image-conditioned PEs read the image that `forward_features` (or
  `forward_intermediates`) received;
- attention bias and rotary: every block's attention is a `PEAttention`, timm's attention
  with the same parameters, which adds the bias to the logits (as the `attn_mask` of
  `scaled_dot_product_attention`) or turns queries and keys before attending;
- conditional: applied to the tokens after the first block.

`_pos_embed` also records the grid of the current forward pass, which the attention layers
and the conditional PE need, since a token sequence does not say its grid.

Letters: B batch, h and w patch grid, N = h·w, T = prefix + N tokens, D token width,
heads attention heads, Dh head width.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from loope.pe import (
    AdditivePE,
    AttentionBiasPE,
    ConditionalPE,
    Grid,
    PositionalEmbedding,
    RotaryPE,
    build_pe,
    pe_info,
)


class AttentionPosition:
    """The bias or rotation that every attention layer applies during one forward pass.

    The host calls `prepare` once per pass with the grid of that pass; the tables are then
    shared by all layers (a rotary PE may give one table per layer). They are kept until
    the next pass, so blocks recomputed under gradient checkpointing find them again.
    """

    def __init__(self, pe: AttentionBiasPE | RotaryPE, num_prefix_tokens: int, depth: int):
        self.pe = pe
        self.num_prefix_tokens = num_prefix_tokens
        self.depth = depth
        self._bias: torch.Tensor | None = None  # heads, T, T
        self._turns: torch.Tensor | None = None  # L or 1, heads or 1, T, Dh/2, complex

    def prepare(self, grid: Grid) -> None:
        """Compute the bias or rotation for `grid`."""
        P = self.num_prefix_tokens
        if isinstance(self.pe, AttentionBiasPE):
            self._bias = F.pad(self.pe(grid), (P, 0, P, 0))  # heads, N, N -> heads, T, T
            return
        angles = self.pe(grid)  # L or 1, heads or 1, N, Dh/2
        if angles.shape[0] not in (1, self.depth):
            raise ValueError(
                f"{type(self.pe).__name__} gives rotations for {angles.shape[0]} layers, "
                f"the host has {self.depth}"
            )
        angles = F.pad(angles.float(), (0, 0, P, 0))  # prefix tokens turn by 0: ... T, Dh/2
        self._turns = torch.polar(torch.ones_like(angles), angles)  # e^(iθ), one per pair

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys (B, heads, T, Dh) turned by the rotation of `layer`, if any.

        Channels (2m, 2m+1) are read as one complex number and multiplied by e^(iθ_m): the
        same turn as `loope.pe.rotate_pairs`, in one kernel and without splitting off the
        prefix tokens (their angle is 0). The product is taken in float32.
        """
        if self._turns is None:
            return q, k
        turn = self._turns[layer if self._turns.shape[0] > 1 else 0]  # heads|1, T, Dh/2
        return _turned(q, turn), _turned(k, turn)

    def logit_bias(self, attn_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """The float mask for attention in `dtype`: the PE's bias merged with the caller's."""
        if self._bias is None:
            return attn_mask
        bias = self._bias.to(dtype)
        if attn_mask is None:
            return bias
        if attn_mask.dtype == torch.bool:
            return bias.masked_fill(~attn_mask, float("-inf"))
        return bias + attn_mask


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    dropout: float = 0.0,
    is_causal: bool = False,
) -> torch.Tensor:
    """Attention of queries on keys (B, heads, T, Dh each) with a float logit `bias`.

    NOTE: on the CPU, `scaled_dot_product_attention` with a float mask is about 1.7x slower
    than softmax(q·kᵀ/√Dh + bias)·v written out (torch 2.x, tiny ViT); there the product
    is written out. Elsewhere, and without a bias, the fused kernel is used.
    """
    if bias is None or q.device.type != "cpu" or is_causal:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=dropout, is_causal=is_causal
        )
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias  # B, heads, T, T
    weights = F.dropout(logits.softmax(-1), dropout) if dropout else logits.softmax(-1)
    return weights @ v  # B, heads, T, Dh


def _turned(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """`x` (B, heads, T, Dh) with each channel pair multiplied by `turn` (complex)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # B, heads, T, Dh/2
    return torch.view_as_real(pairs * turn).flatten(-2).to(x.dtype)  # B, heads, T, Dh


class TakesPosition:
    """An attention layer that a host binds to its `AttentionPosition`, as layer `layer`."""

    position: AttentionPosition | None = None
    layer: int = 0

    def bind(self, position: AttentionPosition, layer: int) -> None:
        """Take position from `position`, as attention layer number `layer`."""
        self.position = position
        self.layer = layer


class PEAttention(TakesPosition, Attention):
    """timm's multi-head attention that also applies the host PE's bias or rotation.

    Same constructor and parameters as `Attention`, so checkpoints load unchanged. Until
    `bind` gives it a position it behaves exactly like the parent.
    """

    @classmethod
    def replacing(cls, attn: Attention) -> PEAttention:
        """A `PEAttention` holding the very layers of `attn` (for hosts that fix their attention).

        Only plain attention is taken over: one with query/key norms or a gate is refused,
        since rebuilding it here would silently drop those parts.
        """
        extras = [
            name
            for name in ("q_norm", "k_norm", "norm")
            if not isinstance(getattr(attn, name, nn.Identity()), nn.Identity)
        ]
        if extras or getattr(attn, "gate", None) is not None:
            raise ValueError(f"cannot take over an attention with {', '.join(extras) or 'gate'}")
        dim = attn.qkv.in_features
        new = cls(dim, num_heads=attn.num_heads, attn_drop=attn.attn_drop.p)
        new.qkv, new.proj, new.proj_drop = attn.qkv, attn.proj, attn.proj_drop
        return new

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if self.position is None:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        B, T, _ = x.shape
        gate = getattr(self, "gate", None)
        gate = gate(x).sigmoid() if gate is not None else None

        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim)  # B, T, 3, heads, Dh
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # B, heads, T, Dh each
        q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.position.rotate(q, k, self.layer)

        mask = self.position.logit_bias(attn_mask, q.dtype)
        dropout = self.attn_drop.p if self.training else 0.0
        x = attend(q, k, v, mask, dropout, is_causal)  # B, heads, T, Dh

        x = x.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # B, T, heads·Dh
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


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
        kind = pe_info(pe_name).kind
        if kind in ("attention-bias", "rotary"):
            _set_host_part(vit_kwargs, "attn_layer", PEAttention, pe_name)
        if kind in ("attention-bias", "rotary", "conditional"):
            _refuse_patch_dropout(vit_kwargs, pe_name)
        super().__init__(pos_embed="none", dynamic_img_size=True, **vit_kwargs)

        grid: Grid = tuple(self.patch_embed.grid_size)
        self.pe: PositionalEmbedding = build_host_pe(
            pe_name,
            pe_options,
            dim=self.embed_dim,
            grid=grid,
            patch_size=self.patch_embed.patch_size[0],
            num_heads=self.blocks[0].attn.num_heads if len(self.blocks) else 1,
            depth=len(self.blocks),
        )
        self._images: torch.Tensor | None = None
        self._grid: Grid = grid
        self._attention_position: AttentionPosition | None = None
        self._install_pe()

    def _install_pe(self) -> None:
        """Hand an attention PE to every block's attention, or a conditional one to block 1."""
        if isinstance(self.pe, AttentionBiasPE | RotaryPE):
            position = AttentionPosition(self.pe, self.num_prefix_tokens, len(self.blocks))
            for layer, block in enumerate(self.blocks):
                block.attn.bind(position, layer)
            self._attention_position = position
        elif isinstance(self.pe, ConditionalPE):
            if not len(self.blocks):
                raise ValueError("a conditional PE needs at least one block to follow")
            self.blocks[0].register_forward_hook(self._condition_tokens)

    def no_weight_decay(self) -> set[str]:
        host = super().no_weight_decay()
        return host | {f"pe.{name}" for name in self.pe.no_weight_decay()}

    def forward_features(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        with self._showing_images(x):
            return super().forward_features(x, **kwargs)

    def forward_intermediates(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with self._showing_images(x):
            return super().forward_intermediates(x, *args, **kwargs)

    @contextmanager
    def _showing_images(self, images: torch.Tensor) -> Iterator[None]:
        """Let an image-conditioned additive PE see `images` (B, C, H, W) during one pass."""
        conditioned = isinstance(self.pe, AdditivePE) and self.pe.info.image_conditioned
        self._images = images if conditioned else None
        try:
            yield
        finally:
            self._images = None

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        B, h, w, D = x.shape
        tokens = x.reshape(B, h * w, D)  # B, h, w, D -> B, N, D
        self._grid = (h, w)
        if self._attention_position is not None:
            self._attention_position.prepare(self._grid)

        cls_embedding = None
        if isinstance(self.pe, AdditivePE):
            embedding = self.pe(self._grid, self._images)
            if embedding.patch is not None:
                tokens = tokens + embedding.patch.to(tokens.dtype)
            if embedding.cls is not None:
                cls_embedding = embedding.cls.to(tokens.dtype)
        prefix = self._prefix_tokens(B, cls_embedding)
        return self.pos_drop(torch.cat((*prefix, tokens), dim=1))  # B, T, D

    def _prefix_tokens(self, B: int, cls_embedding: torch.Tensor | None) -> list[torch.Tensor]:
        """The class token, DeiT's distillation token (each with the PE's class vector, if
        any) and register tokens, each (B, k, D)."""
        prefix = []
        for token in (self.cls_token, getattr(self, "dist_token", None)):
            if token is not None:
                token = token.expand(B, -1, -1)  # B, 1, D
                prefix.append(token if cls_embedding is None else token + cls_embedding)
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(B, -1, -1))  # B, registers, D
        return prefix

    def _condition_tokens(
        self, block: nn.Module, inputs: tuple[Any, ...], tokens: torch.Tensor
    ) -> torch.Tensor:
        """After the first block, the conditional PE rewrites the patch tokens."""
        return self.pe(tokens, self._grid, self.num_prefix_tokens)


def _set_host_part(vit_kwargs: dict[str, Any], key: str, part: type, pe_name: str) -> None:
    if vit_kwargs.get(key, part) is not part:
        raise ValueError(f"PE {pe_name!r} installs its own {key}; do not pass {key}")
    vit_kwargs[key] = part


def build_host_pe(
    pe_name: str,
    pe_options: dict[str, Any] | None,
    *,
    dim: int,
    grid: Grid,
    patch_size: int,
    num_heads: int,
    depth: int,
) -> PositionalEmbedding:
    """The PE called `pe_name` for a host of these facts; the options may not restate them."""
    options = pe_options or {}
    clash = sorted(set(options) & {"dim", "grid", "patch_size", "num_heads", "depth"})
    if clash:
        raise ValueError(
            f"PE {pe_name!r}: {', '.join(clash)} come from the host; leave them out of pe_options"
        )
    return build_pe(pe_name, dim, grid, patch_size, num_heads=num_heads, depth=depth, **options)


def _refuse_patch_dropout(vit_kwargs: dict[str, Any], pe_name: str) -> None:
    if vit_kwargs.get("patch_drop_rate", 0.0) > 0:
        raise ValueError(
            f"PE {pe_name!r} needs every patch of the grid; patch_drop_rate must be 0, "
            f"got {vit_kwargs['patch_drop_rate']}"
        )
