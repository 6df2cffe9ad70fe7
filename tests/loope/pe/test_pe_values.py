"""Values computed by hand at one cell for every frozen PE, and the properties that define
the others: relative-only rotary scores, relative bias lookup, CPVT's bypass, LOOPE's
reduction to the Hilbert PE and its batch independence.

A cell is (row, col); the token index of (i, j) on an h×w grid is i·w + j.
"""

from __future__ import annotations

import math

import pytest
import torch

from loope.pe import PE_REGISTRY, build_pe, rotate_pairs
from loope.pe.loope_pe import ContextNetwork, LoopePE
from loope.pe.relative import relative_offset_index
from loope.pe.sinusoid import sinusoid_table


def sinusoid(x: float, dim: int, base: float = 10000.0) -> list[float]:
    """[sin(x w_0), cos(x w_0), sin(x w_1), ...] with w_k = base^(-2k/dim)."""
    values = []
    for k in range(dim // 2):
        angle = x * base ** (-2 * k / dim)
        values += [math.sin(angle), math.cos(angle)]
    return values


def patch_at(name: str, grid: tuple[int, int], cell: tuple[int, int], dim: int, **opts):
    pe = build_pe(name, dim, grid, 4, **opts)
    table = pe(grid).patch[0]  # N, D
    return table[cell[0] * grid[1] + cell[1]].double()


def test_sinusoid_1d_raster_by_hand() -> None:
    # (1, 2) on 3x5 has raster rank 7, so position 8; w_k = 1, 0.1, 0.01, 0.001.
    expected = [math.sin(8), math.cos(8), math.sin(0.8), math.cos(0.8)]
    expected += [math.sin(0.08), math.cos(0.08), math.sin(0.008), math.cos(0.008)]
    got = patch_at("sinusoid-1d", (3, 5), (1, 2), 8)
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_sinusoid_1d_snake_by_hand() -> None:
    # Snake reverses row 1: (1, 0) is visited 10th (rank 9), position 10; raster says 6.
    got = patch_at("sinusoid-1d", (3, 5), (1, 0), 8, order="snake")
    assert got.tolist() == pytest.approx(sinusoid(10.0, 8), abs=1e-12)
    cls = build_pe("sinusoid-1d", 8, (3, 5), 4, order="snake")((3, 5)).cls[0, 0]
    assert cls.tolist() == pytest.approx(sinusoid(0.0, 8), abs=1e-12)


@pytest.mark.parametrize(("cell", "position"), [((2, 1), 8.0), ((3, 0), 6.0)])
def test_hilbert_pe_by_hand(cell: tuple[int, int], position: float) -> None:
    # 14x14 Gilbert curve starts (0,0) (0,1) (1,1) (1,0) (2,0) (3,0) (3,1) (2,1).
    got = patch_at("hilbert-pe", (14, 14), cell, 8)
    assert got.tolist() == pytest.approx(sinusoid(position, 8), abs=1e-12)


def test_sinusoid_2d_axial_by_hand() -> None:
    # D = 8: rows in channels 0-3, columns in 4-7, each with w = 1, 10000^(-1/2) = 0.01.
    expected = [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)]
    expected += [math.sin(3), math.cos(3), math.sin(0.03), math.cos(0.03)]
    got = patch_at("sinusoid-2d", (3, 5), (2, 3), 8)
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_sinusoid_2d_tells_a_cell_from_its_transpose() -> None:
    axial = build_pe("sinusoid-2d", 8, (4, 4), 4)((4, 4)).patch[0]
    summed = build_pe("sinusoid-2d-summed", 8, (4, 4), 4)((4, 4)).patch[0]
    assert not torch.allclose(axial[1 * 4 + 2], axial[2 * 4 + 1])
    assert torch.allclose(summed[1 * 4 + 2], summed[2 * 4 + 1])


def test_sinusoid_2d_summed_by_hand() -> None:
    # Row 2 of 3 sits at y = 1, column 1 of 5 at x = -0.5; D = 4: w = 1, 0.01.
    y, x = 1.0, -0.5
    expected = [
        math.sin(y) + math.sin(x),
        math.cos(y) + math.cos(x),
        math.sin(0.01 * y) + math.sin(0.01 * x),
        math.cos(0.01 * y) + math.cos(0.01 * x),
    ]
    got = patch_at("sinusoid-2d-summed", (3, 5), (2, 1), 4)
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_rope_axial_angle_by_hand() -> None:
    # dim 16, 2 heads: Dh = 8, w_t = 100^(-4t/8) = 1, 0.1; cell (2, 3) is token 13.
    pe = build_pe("rope-axial", 16, (3, 5), 4, num_heads=2)
    angles = pe((3, 5))[0, 0, 13]
    assert angles.tolist() == pytest.approx([2.0, 0.2, 3.0, 0.3], abs=1e-6)

    q = torch.zeros(1, 2, 1 + 15, 8)  # B, heads, T, Dh
    q[..., 0] = 1.0  # pair 0 = (1, 0)
    cos, sin = pe((3, 5)).cos()[0], pe((3, 5)).sin()[0]
    turned = rotate_pairs(q, cos, sin, num_prefix_tokens=1)
    assert turned[0, 0, 1 + 13, :2].tolist() == pytest.approx([math.cos(2), math.sin(2)], abs=1e-6)
    assert torch.equal(turned[:, :, 0], q[:, :, 0]), "the class token is never rotated"


ROTARY = [name for name, entry in PE_REGISTRY.items() if entry.info.kind == "rotary"]


@pytest.mark.parametrize("name", ROTARY)
def test_rotary_scores_depend_only_on_the_offset(name: str) -> None:
    torch.manual_seed(0)
    grid, heads, head_dim = (4, 6), 2, 8
    pe = build_pe(name, heads * head_dim, grid, 4, num_heads=heads, depth=1)
    angles = pe(grid)[0]  # heads or 1, N, Dh/2
    N = grid[0] * grid[1]
    q = torch.randn(1, heads, 1, head_dim).expand(1, heads, N, head_dim)  # same vector everywhere
    k = torch.randn(1, heads, 1, head_dim).expand(1, heads, N, head_dim)
    q, k = (rotate_pairs(t, angles.cos(), angles.sin(), 0) for t in (q, k))
    scores = (q @ k.transpose(-2, -1))[0]  # heads, N, N

    offset = relative_offset_index(grid)  # N, N: one id per (d_row, d_col)
    for head in range(heads):
        for index in offset.unique():
            same = scores[head][offset == index]
            assert same.max() - same.min() < 1e-4
    assert scores.std() > 1e-2, "the rotation must make scores differ between offsets"


def test_rpe_bias_is_the_table_entry_of_the_offset() -> None:
    torch.manual_seed(0)
    pe = build_pe("rpe", 16, (3, 5), 4, num_heads=2)
    bias = pe((3, 5))  # heads, N, N
    # query (2, 4) = token 14, key (0, 0) = token 0: offset (2, 4) -> (2+2)*9 + (4+4) = 44.
    assert torch.equal(bias[:, 14, 0], pe.table[44])
    assert torch.equal(bias[:, 0, 14], pe.table[(-2 + 2) * 9 + (-4 + 4)])
    assert torch.equal(bias[:, 7, 7], pe.table[2 * 9 + 4]), "zero offset is the table centre"


def test_rpe_resampling_keeps_the_centre() -> None:
    torch.manual_seed(0)
    pe = build_pe("rpe", 16, (3, 5), 4, num_heads=2)
    bias = pe((5, 9))  # 5x9 grid: (9, 17) offsets resampled from (5, 9)
    assert bias.shape == (2, 45, 45)
    assert torch.allclose(bias[:, 0, 0], pe.table[2 * 9 + 4], atol=1e-6)


def test_cpvt_with_a_zero_convolution_is_the_identity() -> None:
    pe = build_pe("cpvt", 8, (3, 5), 4)
    tokens = torch.randn(2, 1 + 15, 8)
    with torch.no_grad():
        pe.conv.weight.zero_()
        pe.conv.bias.zero_()
    assert torch.equal(pe(tokens, (3, 5), 1), tokens)
    with pytest.raises(ValueError, match="14 patch tokens for a 3x5 grid"):
        pe(tokens[:, :-1], (3, 5), 1)


def loope_with_zero_context(grid: tuple[int, int], dim: int = 16) -> LoopePE:
    pe = build_pe("loope", dim, grid, 4)
    with torch.no_grad():
        pe.context.linear.weight.zero_()
    return pe


def test_loope_with_zero_context_is_hilbert_pe_exactly() -> None:
    grid = (3, 5)
    loope = loope_with_zero_context(grid)
    images = torch.randn(3, 3, 12, 20)
    patch = loope(grid, images).patch  # B, N, D
    hilbert = build_pe("hilbert-pe", 16, grid, 4)(grid).patch.to(patch.dtype)  # 1, N, D
    assert patch.shape == (3, 15, 16)
    assert torch.equal(patch, hilbert.expand_as(patch))
    assert torch.equal(loope(grid).patch.to(patch.dtype), hilbert), "no image: X_C = 0"


def test_loope_pe_is_the_sinusoid_of_its_moved_positions() -> None:
    """E(X_G + X_C) by angle addition equals the table of the moved positions, computed anew."""
    torch.manual_seed(0)
    grid = (3, 5)
    pe = build_pe("loope", 16, grid, 4).double()
    images = torch.randn(2, 3, 12, 20, dtype=torch.float64)
    moved = pe.positions(grid, images)  # B, N
    assert torch.allclose(pe(grid, images).patch, sinusoid_table(moved, 16), atol=1e-12)


def test_loope_context_moves_positions_by_less_than_one() -> None:
    torch.manual_seed(0)
    pe = build_pe("loope", 16, (3, 5), 4)
    positions = pe.positions((3, 5), torch.randn(2, 3, 12, 20))
    shift = positions - pe.gilbert[None]
    assert shift.abs().max() < 1 and shift.abs().max() > 0


def test_loope_pe_of_an_image_ignores_its_batch_in_eval_mode() -> None:
    torch.manual_seed(0)
    pe = build_pe("loope", 16, (3, 5), 4, norm="batch")
    batch = torch.randn(4, 3, 12, 20)
    pe.train()
    pe((3, 5), batch)  # move the running statistics away from their start
    pe.eval()
    alone = pe((3, 5), batch[:1]).patch
    together = pe((3, 5), batch).patch[:1]
    assert torch.allclose(alone, together, atol=1e-6)
    pe.train()
    assert not torch.allclose(pe((3, 5), batch[:2]).patch[:1], pe((3, 5), batch).patch[:1])


def test_loope_context_network_has_about_96k_parameters_for_196_patches() -> None:
    network = ContextNetwork(patch_size=16, grid=(14, 14))
    count = sum(p.numel() for p in network.parameters())
    assert 95_000 < count < 97_000, count
