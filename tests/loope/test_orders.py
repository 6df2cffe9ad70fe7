"""Patch orders: the Gilbert curve's properties on every small grid, hand values elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from loope.orders import (
    ORDER_NAMES,
    gilbert_path,
    parse_grid,
    patch_ranks,
    perm_to_ranks,
    ranks_to_perm,
)

SIDES = range(1, 33)


def _diagonal_steps(path: list[tuple[int, int]]) -> int:
    """Number of diagonal steps in a path; fails on any jump that is neither 4- nor diagonal."""
    cells = np.array(path)
    step = np.abs(np.diff(cells, axis=0))  # (N-1, 2): |d_row|, |d_col|
    is_edge = step.sum(axis=1) == 1
    is_diagonal = (step[:, 0] == 1) & (step[:, 1] == 1)
    assert np.all(is_edge | is_diagonal), f"path jumps at steps {np.flatnonzero(~is_edge)}"
    return int(is_diagonal.sum())


@pytest.mark.parametrize("rows", SIDES)
def test_gilbert_visits_every_cell_once_with_at_most_the_expected_diagonal(rows: int) -> None:
    for cols in SIDES:
        path = gilbert_path(rows, cols)
        assert sorted(path) == [(r, c) for r in range(rows) for c in range(cols)], (rows, cols)

        longer, shorter = max(rows, cols), min(rows, cols)
        expect_diagonal = longer % 2 == 1 and shorter % 2 == 0 and shorter > 2
        assert _diagonal_steps(path) == int(expect_diagonal), (rows, cols)


@pytest.mark.parametrize("rows", SIDES)
def test_gilbert_runs_along_the_longer_side_from_corner_to_corner(rows: int) -> None:
    for cols in SIDES:
        path = gilbert_path(rows, cols)
        # A 2 x odd grid has no 4-neighbour path between its two near corners (they have the
        # same chessboard colour), so the curve stops one cell short of the far corner.
        short = 1 if min(rows, cols) == 2 and max(rows, cols) % 2 == 1 else 0
        end = (0, cols - 1 - short) if cols >= rows else (rows - 1 - short, 0)
        assert (path[0], path[-1]) == ((0, 0), end), (rows, cols)
        if rows != cols:
            assert gilbert_path(cols, rows) == [(c, r) for r, c in path], (rows, cols)


@pytest.mark.parametrize("side", [1, 2, 4, 8, 16, 32])
def test_gilbert_is_the_classical_hilbert_curve_on_power_of_two_squares(side: int) -> None:
    np.testing.assert_array_equal(
        patch_ranks("gilbert", side, side), patch_ranks("hilbert", side, side)
    )


def test_classical_hilbert_4x4_by_hand() -> None:
    # Quadrants top-left, bottom-left, bottom-right, top-right; ends at the top-right corner.
    expected = [
        [0, 1, 14, 15],
        [3, 2, 13, 12],
        [4, 7, 8, 11],
        [5, 6, 9, 10],
    ]
    np.testing.assert_array_equal(patch_ranks("hilbert", 4, 4).reshape(4, 4), expected)


def test_gilbert_14x14_start_and_no_diagonal() -> None:
    path = gilbert_path(14, 14)
    assert path[:8] == [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (3, 0), (3, 1), (2, 1)]
    assert _diagonal_steps(path) == 0


def test_gilbert_3x4_by_hand() -> None:
    # Near 2x2 block, the bottom row left to right, then the far 2x2 block back up.
    expected = [
        [0, 1, 10, 11],
        [3, 2, 9, 8],
        [4, 5, 6, 7],
    ]
    np.testing.assert_array_equal(patch_ranks("gilbert", 3, 4).reshape(3, 4), expected)


def test_raster_snake_zigzag_3x4_by_hand() -> None:
    raster = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    snake = [[0, 1, 2, 3], [7, 6, 5, 4], [8, 9, 10, 11]]
    zigzag = [[0, 1, 5, 6], [2, 4, 7, 10], [3, 8, 9, 11]]
    for order, expected in (("raster", raster), ("snake", snake), ("zigzag", zigzag)):
        np.testing.assert_array_equal(patch_ranks(order, 3, 4).reshape(3, 4), expected)


def test_zigzag_4x2_by_hand() -> None:
    expected = [[0, 1], [2, 4], [3, 5], [6, 7]]
    np.testing.assert_array_equal(patch_ranks("zigzag", 4, 2).reshape(4, 2), expected)


def test_zigzag_starts_like_jpeg_on_8x8() -> None:
    perm = ranks_to_perm(patch_ranks("zigzag", 8, 8))
    cells = [divmod(int(patch), 8) for patch in perm[:10]]
    assert cells == [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0)]


GRIDS = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 4), (4, 3), (5, 5), (7, 12), (14, 14), (16, 16)]
ORDER_GRIDS = [
    (order, rows, cols)
    for order in ORDER_NAMES
    for rows, cols in GRIDS
    if order != "hilbert" or (rows == cols and rows & (rows - 1) == 0)
]


@pytest.mark.parametrize(("order", "rows", "cols"), ORDER_GRIDS)
def test_every_order_is_a_permutation(order: str, rows: int, cols: int) -> None:
    rank = patch_ranks(order, rows, cols)
    assert rank.dtype == np.int64 and rank.shape == (rows * cols,)
    np.testing.assert_array_equal(np.sort(rank), np.arange(rows * cols))


@pytest.mark.parametrize(("rows", "cols"), [(14, 14), (3, 3), (8, 16), (6, 6), (1, 2)])
def test_hilbert_refuses_other_grids_and_points_to_gilbert(rows: int, cols: int) -> None:
    with pytest.raises(ValueError, match=rf"{rows}x{cols}.*gilbert"):
        patch_ranks("hilbert", rows, cols)


def test_rank_and_perm_are_inverse_and_not_interchangeable() -> None:
    rank = patch_ranks("zigzag", 3, 4)
    perm = ranks_to_perm(rank)
    np.testing.assert_array_equal(perm[:6], [0, 1, 4, 8, 5, 2])  # patch visited at each step
    np.testing.assert_array_equal(perm_to_ranks(perm), rank)
    np.testing.assert_array_equal(perm[rank], np.arange(12))
    assert not np.array_equal(perm, rank)


@pytest.mark.parametrize("bad", [[0, 0, 1], [1, 2, 3], [[0, 1]], [0.0, 1.0]])
def test_rank_perm_conversion_refuses_non_permutations(bad: list) -> None:
    with pytest.raises(ValueError, match="rank"):
        ranks_to_perm(np.array(bad))
    with pytest.raises(ValueError, match="perm"):
        perm_to_ranks(np.array(bad))


def test_bad_order_and_grid_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"order='spiral'.*raster.*gilbert"):
        patch_ranks("spiral", 4, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"rows=0 .*>= 1"):
        patch_ranks("raster", 0, 4)
    with pytest.raises(ValueError, match=r"cols=-2 "):
        gilbert_path(3, -2)


def test_parse_grid() -> None:
    assert parse_grid("14x14") == (14, 14)
    assert parse_grid("7x12") == (7, 12)
    for bad in ("14", "x14", "14x", "axb", "3x4x5", "-3x4"):
        with pytest.raises(ValueError, match=rf"{bad!r}.*ROWSxCOLS"):
            parse_grid(bad)
    with pytest.raises(ValueError, match="rows=0"):
        parse_grid("0x3")
