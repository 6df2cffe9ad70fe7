"""The registry of positional embeddings: one entry per name of the catalogue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loope.pe.base import AdditiveOutput, Grid, PEInfo, PositionalEmbedding
from loope.pe.learnable import LearnablePE, NoPE
from loope.pe.loope_pe import LoopePE
from loope.pe.sinusoid import OrderedSinusoidPE

__all__ = [
    "PE_REGISTRY",
    "AdditiveOutput",
    "Grid",
    "PEEntry",
    "PEInfo",
    "PositionalEmbedding",
    "build_pe",
    "pe_names",
]


@dataclass(frozen=True)
class PEEntry:
    """A catalogue entry: how to build the PE and what it is."""

    name: str
    summary: str
    build: Callable[..., PositionalEmbedding]
    uses_order: bool = False

    @property
    def info(self) -> PEInfo:
        return self.build.info  # type: ignore[attr-defined]


def _hilbert_pe(dim: int, grid: Grid, **options: Any) -> OrderedSinusoidPE:
    return OrderedSinusoidPE(dim, grid, order="gilbert", **options)


_hilbert_pe.info = OrderedSinusoidPE.info  # type: ignore[attr-defined]

PE_REGISTRY: dict[str, PEEntry] = {
    entry.name: entry
    for entry in (
        PEEntry("none", "no positional information", NoPE),
        PEEntry("learnable", "free table, N(0, 0.02), CLS row included", LearnablePE),
        PEEntry("sinusoid-1d", "frozen 1-D sin/cos over an order's ranks", OrderedSinusoidPE, True),
        PEEntry("hilbert-pe", "frozen 1-D sin/cos over Gilbert ranks", _hilbert_pe),
        PEEntry("loope", "sin/cos over Gilbert ranks plus a learned context bias", LoopePE),
    )
}


def pe_names() -> list[str]:
    return list(PE_REGISTRY)


def build_pe(
    name: str, dim: int, grid: Grid, patch_size: int, **options: Any
) -> PositionalEmbedding:
    """Build the PE called `name` for tokens of width `dim` on a `grid` of patches.

    `patch_size` reaches only PEs that look at the image; `options` are the PE's own
    keyword arguments (for example `order` for `sinusoid-1d`, `norm` for `loope`).
    """
    if name not in PE_REGISTRY:
        raise ValueError(f"unknown PE {name!r}; choose one of {', '.join(PE_REGISTRY)}")
    entry = PE_REGISTRY[name]
    if entry.info.image_conditioned:
        options = {"patch_size": patch_size, **options}
    return entry.build(dim, grid, **options)
