"""Architectures that host a catalogue PE, the sizes they come in, and which PEs they take.

`FAMILIES` holds one entry per architecture family of the paper (plus Swin): the adapter
class, its size presets (timm's own keyword arguments) and the PE kinds it cannot host.
`build_model` builds any (family, size, PE); `supports` says whether a pair is possible.
No weights are ever downloaded: a local checkpoint is loaded by `loope.models.checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from loope.models.cait import PECait
from loope.models.crossvit import PECrossVit
from loope.models.deit import PEDistilledTransformer
from loope.models.swin import UNSUPPORTED_KINDS as SWIN_UNSUPPORTED
from loope.models.swin import PESwinTransformer
from loope.models.vit import PEVisionTransformer
from loope.pe import PEKind, pe_info

ArchName = Literal["vit", "deit", "deit-distilled", "cait", "crossvit", "swin"]
SizeName = Literal["tiny", "small", "base", "s24"]

ARCH_NAMES: tuple[ArchName, ...] = ("vit", "deit", "deit-distilled", "cait", "crossvit", "swin")
SIZE_NAMES: tuple[SizeName, ...] = ("tiny", "small", "base", "s24")


@dataclass(frozen=True)
class Preset:
    """One size of a family: the host's keyword arguments and the paper's image and patch.

    Attributes:
        label: the name the literature uses (ViT-B/16, CaiT-S24, ...).
        host: timm's own constructor arguments for this size (width, depth, heads, ...).
        img_size: the image size the size is meant for.
        patch_size: the patch size it is meant for (CrossViT: the small branch's).
    """

    label: str
    host: dict[str, Any]
    img_size: int
    patch_size: int


@dataclass(frozen=True)
class Family:
    """An architecture family: its adapter, its sizes and the PE kinds it cannot host."""

    name: ArchName
    summary: str
    adapter: type[nn.Module]
    sizes: dict[SizeName, Preset]
    unsupported: dict[PEKind, str] = field(default_factory=dict)


def _vit_sizes(prefix: str) -> dict[SizeName, Preset]:
    return {
        "tiny": Preset(f"{prefix}-tiny (CPU)", dict(embed_dim=64, depth=4, num_heads=4,
                                                    mlp_ratio=2.0), 32, 4),
        "small": Preset(f"{prefix}-S/16", dict(embed_dim=384, depth=12, num_heads=6), 224, 16),
        "base": Preset(f"{prefix}-B/16", dict(embed_dim=768, depth=12, num_heads=12), 224, 16),
    }  # fmt: skip


FAMILIES: dict[ArchName, Family] = {
    family.name: family
    for family in (
        Family("vit", "timm VisionTransformer", PEVisionTransformer, _vit_sizes("ViT")),
        Family("deit", "DeiT: the ViT host, DeiT sizes", PEVisionTransformer, _vit_sizes("DeiT")),
        Family(
            "deit-distilled",
            "DeiT with its distillation token and head",
            PEDistilledTransformer,
            _vit_sizes("DeiT-distilled"),
        ),
        Family(
            "cait",
            "CaiT: class token joins late, talking-heads attention",
            PECait,
            {
                "tiny": Preset(
                    "CaiT-tiny (CPU)",
                    dict(
                        embed_dim=64,
                        depth=4,
                        num_heads=4,
                        mlp_ratio=2.0,
                        depth_token_only=1,
                        init_values=1e-5,
                    ),
                    32,
                    4,
                ),
                "s24": Preset(
                    "CaiT-S24",
                    dict(embed_dim=384, depth=24, num_heads=8, init_values=1e-5),
                    224,
                    16,
                ),
            },
        ),  # fmt: skip
        Family(
            "crossvit",
            "CrossViT: two branches, two grids, one PE per branch",
            PECrossVit,
            {
                "tiny": Preset(
                    "CrossViT-tiny (CPU)",
                    dict(
                        embed_dim=(32, 64),
                        depth=((1, 2, 0), (1, 2, 0)),
                        num_heads=(2, 4),
                        mlp_ratio=(2.0, 2.0, 1.0),
                        large_patch=2.0,
                    ),
                    32,
                    4,
                ),
                "base": Preset(
                    "CrossViT-B 240 px",
                    dict(
                        embed_dim=(384, 768),
                        depth=((1, 4, 0),) * 3,
                        num_heads=(12, 12),
                        mlp_ratio=(4.0, 4.0, 1.0),
                        large_patch=16 / 12,
                        img_scale=(1.0, 224 / 240),
                    ),
                    240,
                    12,
                ),
            },
        ),  # fmt: skip
        Family(
            "swin",
            "Swin: window attention, one PE per stage on the window grid",
            PESwinTransformer,
            {
                "tiny": Preset(
                    "Swin-tiny (CPU)",
                    dict(
                        embed_dim=32,
                        depths=(2, 2),
                        num_heads=(2, 4),
                        window_size=4,
                        drop_path_rate=0.0,
                    ),
                    32,
                    4,
                ),
                "base": Preset(
                    "Swin-B/4 w7",
                    dict(
                        embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7
                    ),
                    224,
                    4,
                ),
            },
            SWIN_UNSUPPORTED,
        ),  # fmt: skip
    )
}


def family(arch: str) -> Family:
    """The family called `arch`."""
    if arch not in FAMILIES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[arch]  # type: ignore[index]


def preset(arch: str, size: str) -> Preset:
    """The size `size` of family `arch`."""
    sizes = family(arch).sizes
    if size not in sizes:
        raise ValueError(f"architecture {arch!r} has no size {size!r}; choose one of "
                         f"{', '.join(sizes)}")  # fmt: skip
    return sizes[size]  # type: ignore[index]


def supports(arch: str, pe: str) -> str | None:
    """None when family `arch` can host PE `pe`; otherwise the reason it cannot."""
    kind = pe_info(pe).kind
    reason = family(arch).unsupported.get(kind)
    return None if reason is None else f"{arch} cannot host {kind} PEs: {reason}"


def build_model(
    arch: ArchName,
    size: SizeName,
    pe: str,
    *,
    img_size: int | tuple[int, int],
    patch_size: int,
    num_classes: int,
    in_chans: int = 3,
    pe_options: dict[str, Any] | None = None,
    drop_rate: float = 0.0,
    host_overrides: dict[str, Any] | None = None,
) -> nn.Module:
    """Build size `size` of family `arch` with the PE called `pe`, without any weights.

    `host_overrides` replaces some of the preset's host arguments (a narrower test model).
    """
    chosen, reason = preset(arch, size), supports(arch, pe)
    if reason is not None:
        raise ValueError(reason)
    sides = (img_size, img_size) if isinstance(img_size, int) else img_size
    if any(side % patch_size for side in sides):
        raise ValueError(
            f"patch_size={patch_size} must divide img_size={img_size} (the grid must be whole)"
        )
    host = dict(chosen.host) | (host_overrides or {})
    if arch == "crossvit":
        host["patch_size"] = _branch_patches(host.pop("large_patch"), patch_size)
    else:
        host["patch_size"] = patch_size
    adapter = FAMILIES[arch].adapter
    return adapter(
        pe, pe_options, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
        drop_rate=drop_rate, **host,
    )  # fmt: skip


def _branch_patches(large_over_small: float, patch_size: int) -> tuple[int, int]:
    """CrossViT's two patch sizes: `patch_size` and the large branch's, a fixed ratio larger."""
    large = patch_size * large_over_small
    if abs(large - round(large)) > 1e-9:
        raise ValueError(
            f"CrossViT: patch_size={patch_size} times {large_over_small:.4g} must be whole "
            "(the large branch's patch)"
        )
    return patch_size, round(large)
