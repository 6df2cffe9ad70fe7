"""Learnable Fourier features of a patch's 2-D position, followed by a small MLP.

After Li et al. (2021), "Learnable Fourier Features for Multi-Dimensional Spatial
Positional Encoding": a cell's coordinates p = (row, col), each mapped linearly onto
[−1, 1], are projected by a learned matrix W of F/2 frequency vectors; the features
r(p) = [cos(W p), sin(W p)] / √F go through an MLP (Linear, GELU, Linear) to the token
width. W starts from N(0, σ²), σ = `frequency_std`.

Because the PE is a function of continuous coordinates, another grid is handled by
evaluating it at that grid's coordinates. The class token gets no embedding: its own
learned token already plays that part.

Letters: N = h·w patches in row-major order, D token width, F Fourier features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from loope.pe.base import AdditiveOutput, AdditivePE, Grid, PEInfo
from loope.pe.sinusoid_2d import unit_coordinates


def cell_coordinates(grid: Grid) -> torch.Tensor:
    """(row, col) of every cell on [−1, 1]², shape (N, 2), float32, row-major."""
    h, w = grid
    rows = unit_coordinates(h).repeat_interleave(w)  # N
    cols = unit_coordinates(w).repeat(h)  # N
    return torch.stack((rows, cols), dim=-1).float()  # N, 2


class FourierPE(AdditivePE):
    """Learnable Fourier features plus MLP; the frequencies skip weight decay.

    Args:
        dim: token width D.
        grid: the grid built for (only its coordinates are cached).
        num_features: F, the number of Fourier features (F/2 frequency vectors); even.
        hidden_dim: width of the MLP's hidden layer.
        frequency_std: σ of the initial frequencies, in radians per unit of [−1, 1]; with 8,
            neighbouring patches of a 14-wide grid differ by about one radian.
    """

    info = PEInfo(
        kind="additive",
        trainable=True,
        image_conditioned=False,
        cls_policy="none",
        grid_rule="recompute",
    )

    def __init__(
        self,
        dim: int,
        grid: Grid,
        num_features: int = 128,
        hidden_dim: int = 256,
        frequency_std: float = 8.0,
    ) -> None:
        super().__init__(dim, grid)
        if num_features < 2 or num_features % 2:
            raise ValueError(f"num_features must be a positive even number, got {num_features}")
        self.frequencies = nn.Parameter(torch.randn(num_features // 2, 2) * frequency_std)
        self.mlp = nn.Sequential(
            nn.Linear(num_features, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim)
        )
        self.register_buffer("coordinates", cell_coordinates(grid), persistent=False)  # N, 2

    def no_weight_decay(self) -> set[str]:
        return {"frequencies"}

    def forward(self, grid: Grid, images: torch.Tensor | None = None) -> AdditiveOutput:
        coords = self.coordinates
        if grid != self.grid:
            coords = cell_coordinates(grid).to(self.coordinates)
        angles = coords @ self.frequencies.T  # N, F/2
        features = torch.cat((angles.cos(), angles.sin()), dim=-1)  # N, F
        features = features / math.sqrt(features.shape[-1])
        return AdditiveOutput(patch=self.mlp(features)[None], cls=None)  # 1, N, D
