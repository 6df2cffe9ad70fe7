"""Architectures that host a catalogue PE, and the sizes they come in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from loope.models.vit import PEVisionTransformer

ArchName = Literal["vit", "deit"]
SizeName = Literal["tiny", "small", "base"]

ARCH_NAMES: tuple[ArchName, ...] = ("vit", "deit")
SIZE_NAMES: tuple[SizeName, ...] = ("tiny", "small", "base")


@dataclass(frozen=True)
class Width:
    """Token width, depth and heads of one model size."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


SIZES: dict[SizeName, Width] = {
    "tiny": Width(embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),  # trains on a CPU
    "small": Width(embed_dim=384, depth=12, num_heads=6),  # ViT-S/16, DeiT-S/16
    "base": Width(embed_dim=768, depth=12, num_heads=12),  # ViT-B/16, DeiT-B/16
}


def build_model(
    arch: ArchName,
    size: SizeName,
    pe: str,
    *,
    img_size: int,
    patch_size: int,
    num_classes: int,
    in_chans: int = 3,
    pe_options: dict[str, Any] | None = None,
    drop_rate: float = 0.0,
) -> nn.Module:
    """Build an architecture of the given size with the PE called `pe`."""
    if arch not in ARCH_NAMES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCH_NAMES)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if img_size % patch_size:
        raise ValueError(
            f"patch_size={patch_size} must divide img_size={img_size} (the grid must be whole)"
        )
    width = SIZES[size]
    return PEVisionTransformer(
        pe,
        pe_options,
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=width.embed_dim,
        depth=width.depth,
        num_heads=width.num_heads,
        mlp_ratio=width.mlp_ratio,
        drop_rate=drop_rate,
    )
