"""The registry of positional embeddings: one entry per name of the catalogue.

A host builds a PE with `build_pe`, giving the token width, its patch grid and the facts
about itself that some PEs need (patch size, attention heads, depth); each entry says
which of those it takes. `patch_embedding_grid` lays an additive PE out on its grid for
PESI and similarity maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from loope.pe.base import (
    AdditiveOutput,
    AdditivePE,
    AttentionBiasPE,
    ConditionalPE,
    Grid,
    PEInfo,
    PEKind,
    PositionalEmbedding,
    RotaryPE,
    patch_embedding_grid,
    rotate_pairs,
)
from loope.pe.conditional import ConvPositionPE
from loope.pe.fourier import FourierPE
from loope.pe.learnable import LearnablePE, NoPE
from loope.pe.loope_pe import LoopePE
from loope.pe.relative import RelativeBiasPE
from loope.pe.rotary import AxialRotaryPE, MixedRotaryPE
from loope.pe.sinusoid import OrderedSinusoidPE
from loope.pe.sinusoid_2d import AxialSinusoidPE, SummedSinusoidPE

__all__ = [
    "PE_REGISTRY",
    "AdditiveOutput",
    "AdditivePE",
    "AttentionBiasPE",
    "ConditionalPE",
    "Grid",
    "HostArg",
    "PEEntry",
    "PEInfo",
    "PEKind",
    "PositionalEmbedding",
    "RotaryPE",
    "build_pe",
    "patch_embedding_grid",
    "pe_info",
    "pe_names",
    "rotate_pairs",
]

HostArg = Literal["patch_size", "num_heads", "depth"]
"""Facts about the host that a PE may need: its patch size, attention heads and layers."""


@dataclass(frozen=True)
class PEEntry:
    """A catalogue entry: which class builds the PE, with which options pinned, and what it is.

    Attributes:
        name: the registry name used in experiment specs.
        summary: one line for listings.
        pe_class: the PE's class; its `info` is the entry's.
        pinned: options the entry fixes (`hilbert-pe` is the 1-D sinusoid on Gilbert ranks).
        uses_order: whether a spec may choose the patch order.
        host_args: the host facts passed to the constructor.
    """

    name: str
    summary: str
    pe_class: type[PositionalEmbedding]
    pinned: dict[str, Any] = field(default_factory=dict)
    uses_order: bool = False
    host_args: tuple[HostArg, ...] = ()

    @property
    def info(self) -> PEInfo:
        return self.pe_class.info

    def build(self, dim: int, grid: Grid, **options: Any) -> PositionalEmbedding:
        """The PE for width `dim` on `grid`; `options` must not override a pinned one."""
        clash = sorted(set(options) & set(self.pinned))
        if clash:
            raise ValueError(f"PE {self.name!r} fixes {', '.join(clash)}; leave it out")
        return self.pe_class(dim, grid, **self.pinned, **options)


PE_REGISTRY: dict[str, PEEntry] = {
    entry.name: entry
    for entry in (
        PEEntry("none", "no positional information", NoPE),
        PEEntry("learnable", "free table, N(0, 0.02), CLS row included", LearnablePE),
        PEEntry(
            "sinusoid-1d",
            "frozen 1-D sin/cos over an order's ranks",
            OrderedSinusoidPE,
            uses_order=True,
        ),
        PEEntry(
            "hilbert-pe",
            "frozen 1-D sin/cos over Gilbert ranks",
            OrderedSinusoidPE,
            pinned={"order": "gilbert"},
        ),
        PEEntry(
            "loope",
            "sin/cos over Gilbert ranks plus a learned context bias",
            LoopePE,
            host_args=("patch_size",),
        ),
        PEEntry("sinusoid-2d", "frozen axial 2-D sin/cos (rows, then columns)", AxialSinusoidPE),
        PEEntry(
            "sinusoid-2d-summed",
            "frozen sin/cos of row plus col in the same channels, coordinates in [-1, 1]",
            SummedSinusoidPE,
        ),
        PEEntry("fourier", "learnable Fourier features of (row, col) and an MLP", FourierPE),
        PEEntry("cpvt", "depth-wise 3x3 conv over the grid after the first block", ConvPositionPE),
        PEEntry(
            "rpe",
            "learned relative bias per head and 2-D offset (Swin)",
            RelativeBiasPE,
            host_args=("num_heads",),
        ),
        PEEntry(
            "rope-axial",
            "2-D RoPE, half the pairs by row, half by column, base 100",
            AxialRotaryPE,
            host_args=("num_heads",),
        ),
        PEEntry(
            "rope-mixed",
            "2-D RoPE with learned frequencies per head and layer, base 10",
            MixedRotaryPE,
            host_args=("num_heads", "depth"),
        ),
    )
}


def pe_names() -> list[str]:
    return list(PE_REGISTRY)


def pe_info(name: str) -> PEInfo:
    """What the PE called `name` declares about itself."""
    return _entry(name).info


def build_pe(
    name: str,
    dim: int,
    grid: Grid,
    patch_size: int,
    *,
    num_heads: int = 1,
    depth: int = 1,
    **options: Any,
) -> PositionalEmbedding:
    """Build the PE called `name` for tokens of width `dim` on a `grid` of patches.

    `patch_size`, `num_heads` and `depth` describe the host and reach only the PEs whose
    entry takes them; `options` are the PE's own keyword arguments (for example `order`
    for `sinusoid-1d`, `norm` for `loope`).
    """
    entry = _entry(name)
    host = {"patch_size": patch_size, "num_heads": num_heads, "depth": depth}
    return entry.build(dim, grid, **{arg: host[arg] for arg in entry.host_args}, **options)


def _entry(name: str) -> PEEntry:
    if name not in PE_REGISTRY:
        raise ValueError(f"unknown PE {name!r}; choose one of {', '.join(PE_REGISTRY)}")
    return PE_REGISTRY[name]
