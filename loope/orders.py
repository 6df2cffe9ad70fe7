"""Patch orders: the position of every patch along a path through the patch grid.

An order is returned as ``rank[patch]``: the 0-based step at which the path visits each
patch, with patches in row-major token order (``patch = row * cols + col``). Its inverse,
``perm[step]`` (which patch is visited at each step), is only for permuting tokens; the two
are converted with :func:`ranks_to_perm` and :func:`perm_to_ranks` and must not be mixed.

Orders (``rows`` × ``cols`` grid, ``N = rows * cols``):

- ``raster``: row by row, left to right.
- ``snake``: raster with every odd row reversed (boustrophedon).
- ``zigzag``: the JPEG anti-diagonal scan, generalised to rectangles. Anti-diagonal
  ``s = row + col`` is visited after ``s - 1``; even diagonals run from bottom-left to
  top-right, odd ones from top-right to bottom-left, so the scan starts (0,0), (0,1), (1,0).
- ``hilbert``: the classical Hilbert curve, defined only on ``2^k × 2^k`` grids.
- ``gilbert``: the generalised Hilbert curve for any grid (LOOPE's static order). The paper
  numbers its cells 1..N; our rank is that number minus one.

Grids are written ``ROWSxCOLS`` (``"14x14"``, ``"7x12"``); see :func:`parse_grid`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Literal, get_args

import numpy as np

logger = logging.getLogger(__name__)

OrderName = Literal["raster", "snake", "zigzag", "hilbert", "gilbert"]
ORDER_NAMES: tuple[OrderName, ...] = get_args(OrderName)

Cell = tuple[int, int]
"""A grid cell as (row, col)."""

_GRID_PATTERN = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")


def parse_grid(text: str) -> tuple[int, int]:
    """Read a grid written ``ROWSxCOLS`` (``"14x14"``, ``"7x12"``) into ``(rows, cols)``."""
    match = _GRID_PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(
            f"grid {text!r} is not of the form ROWSxCOLS with positive integers, e.g. '14x14'"
        )
    rows, cols = int(match.group(1)), int(match.group(2))
    _check_grid(rows, cols)
    return rows, cols


def patch_ranks(order: OrderName, rows: int, cols: int) -> np.ndarray:
    """Rank of every patch along ``order``: int64, shape ``(rows * cols,)``, values 0..N-1.

    Patches are indexed in row-major token order, so ``rank[row * cols + col]`` is the step
    at which the order visits cell ``(row, col)``.
    """
    _check_grid(rows, cols)
    if order == "raster":
        return np.arange(rows * cols, dtype=np.int64)
    if order == "snake":
        return _snake_ranks(rows, cols)
    if order == "zigzag":
        return _zigzag_ranks(rows, cols)
    if order == "hilbert":
        return _path_to_ranks(_hilbert_path(rows, cols), rows, cols)
    if order == "gilbert":
        return _path_to_ranks(gilbert_path(rows, cols), rows, cols)
    raise ValueError(f"order={order!r} is not a known patch order; allowed: {ORDER_NAMES}")


def ranks_to_perm(rank: np.ndarray) -> np.ndarray:
    """Invert ``rank[patch]`` into ``perm[step]``, the patch visited at each step."""
    rank = _check_permutation(rank, "rank")
    perm = np.empty_like(rank)
    perm[rank] = np.arange(rank.size, dtype=np.int64)
    return perm


def perm_to_ranks(perm: np.ndarray) -> np.ndarray:
    """Invert ``perm[step]`` into ``rank[patch]``, the step at which each patch is visited."""
    perm = _check_permutation(perm, "perm")
    rank = np.empty_like(perm)
    rank[perm] = np.arange(perm.size, dtype=np.int64)
    return rank


def gilbert_path(rows: int, cols: int) -> list[Cell]:
    """Cells ``(row, col)`` in the order the generalised Hilbert (Gilbert) curve visits them.

    The curve starts at (0, 0) with its major axis along the longer side (columns when
    ``cols >= rows``) and ends at the far corner of that side, or one cell short of it on a
    2 × odd grid, where that corner cannot be reached. Every step moves to a 4-neighbour,
    except one diagonal step when the longer side is odd and the shorter side is even and
    greater than 2.
    """
    _check_grid(rows, cols)
    # Vectors are (d_col, d_row): the recursion works in (x, y) = (col, row).
    along_cols, along_rows = (cols, 0), (0, rows)
    major, minor = (along_cols, along_rows) if cols >= rows else (along_rows, along_cols)
    return [(y, x) for x, y in _fill(0, 0, major, minor)]


def _fill(x: int, y: int, a: tuple[int, int], b: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """Visit the rectangle spanned by ``a`` and ``b`` from corner (x, y), ending along ``a``.

    ``a`` is the major vector and ``b`` the minor one, each axis-aligned; the walk ends at the
    far corner of the side that starts at (x, y) and runs along ``a``.
    """
    length, thickness = _extent(a), _extent(b)
    if thickness == 1:
        yield from _walk(x, y, a, length)
        return
    if length == 1:
        yield from _walk(x, y, b, thickness)
        return

    # Floor division, so odd negative extents round the same way as positive ones.
    half_a = (a[0] // 2, a[1] // 2)
    half_b = (b[0] // 2, b[1] // 2)
    if 2 * length > 3 * thickness:
        yield from _fill_long(x, y, a, b, half_a)
    else:
        yield from _fill_bent(x, y, a, b, half_a, half_b)


def _fill_long(
    x: int, y: int, a: tuple[int, int], b: tuple[int, int], half_a: tuple[int, int]
) -> Iterator[tuple[int, int]]:
    """Long rectangle: split along ``a`` only and fill both halves in the same orientation."""
    if _extent(half_a) % 2 == 1 and _extent(a) > 2:
        half_a = _lengthen(half_a, a)
    rest_a = (a[0] - half_a[0], a[1] - half_a[1])
    yield from _fill(x, y, half_a, b)
    yield from _fill(x + half_a[0], y + half_a[1], rest_a, b)


def _fill_bent(
    x: int,
    y: int,
    a: tuple[int, int],
    b: tuple[int, int],
    half_a: tuple[int, int],
    half_b: tuple[int, int],
) -> Iterator[tuple[int, int]]:
    """Squarish rectangle: go up the near part, across the far part, back down the far end."""
    if _extent(half_b) % 2 == 1 and _extent(b) > 2:
        half_b = _lengthen(half_b, b)
    rest_a = (a[0] - half_a[0], a[1] - half_a[1])
    rest_b = (b[0] - half_b[0], b[1] - half_b[1])
    step_a, step_b = _unit(a), _unit(b)

    # 1. Up the near part, major and minor swapped.
    yield from _fill(x, y, half_b, half_a)
    # 2. Across the far part along the whole of a.
    yield from _fill(x + half_b[0], y + half_b[1], a, rest_b)
    # 3. Back down from the far corner, both vectors negated.
    far_x = x + (a[0] - step_a[0]) + (half_b[0] - step_b[0])
    far_y = y + (a[1] - step_a[1]) + (half_b[1] - step_b[1])
    yield from _fill(far_x, far_y, (-half_b[0], -half_b[1]), (-rest_a[0], -rest_a[1]))


def _walk(x: int, y: int, direction: tuple[int, int], count: int) -> Iterator[tuple[int, int]]:
    """``count`` cells in a straight line from (x, y) along the sign of ``direction``."""
    dx, dy = _unit(direction)
    for step in range(count):
        yield x + step * dx, y + step * dy


def _extent(vector: tuple[int, int]) -> int:
    """Number of cells an axis-aligned vector spans."""
    return abs(vector[0] + vector[1])


def _unit(vector: tuple[int, int]) -> tuple[int, int]:
    """The unit step along an axis-aligned vector."""
    return int(np.sign(vector[0])), int(np.sign(vector[1]))


def _lengthen(half: tuple[int, int], whole: tuple[int, int]) -> tuple[int, int]:
    """``half`` lengthened by one step in the direction of ``whole``."""
    dx, dy = _unit(whole)
    return half[0] + dx, half[1] + dy


def _hilbert_path(rows: int, cols: int) -> list[Cell]:
    """Cells of the classical Hilbert curve on a ``2^k`` square, from (0, 0) to (0, side-1)."""
    if rows != cols or rows & (rows - 1):
        raise ValueError(
            f"order 'hilbert' needs a 2^k x 2^k grid, got {rows}x{cols}; "
            "use order 'gilbert' for other grids"
        )
    return [_hilbert_cell(step, rows) for step in range(rows * cols)]


def _hilbert_cell(step: int, side: int) -> Cell:
    """Cell (row, col) of the classical Hilbert curve at ``step`` on a ``side`` square.

    Reads ``step`` two bits at a time from the least significant end: each pair picks the
    quadrant at the current scale, and the cell found so far is reflected or transposed so
    that the finer curve enters and leaves that quadrant at the right corners.
    """
    x = y = 0  # x = col, y = row
    scale = 1
    while scale < side:
        quad_x = 1 & (step // 2)
        quad_y = 1 & (step ^ quad_x)
        if quad_y == 0:
            if quad_x == 1:
                x, y = scale - 1 - x, scale - 1 - y
            x, y = y, x
        x += scale * quad_x
        y += scale * quad_y
        step //= 4
        scale *= 2
    return y, x


def _snake_ranks(rows: int, cols: int) -> np.ndarray:
    """Raster ranks with the columns of every odd row reversed."""
    rank = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
    rank[1::2] = rank[1::2, ::-1]
    return rank.reshape(-1)


def _zigzag_ranks(rows: int, cols: int) -> np.ndarray:
    """JPEG anti-diagonal ranks: by diagonal, rows falling on even ones, rising on odd ones."""
    row, col = np.divmod(np.arange(rows * cols, dtype=np.int64), cols)
    diagonal = row + col
    along = np.where(diagonal % 2 == 0, -row, row)
    perm = np.lexsort((along, diagonal))  # last key is the primary one
    return perm_to_ranks(perm)


def _path_to_ranks(path: list[Cell], rows: int, cols: int) -> np.ndarray:
    """Ranks of the cells of a path that visits every cell of the grid once."""
    perm = np.array([row * cols + col for row, col in path], dtype=np.int64)
    return perm_to_ranks(perm)


def _check_grid(rows: int, cols: int) -> None:
    """Refuse grids that are not at least one cell in each direction."""
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1")


def _check_permutation(values: np.ndarray, name: str) -> np.ndarray:
    """Return ``values`` as int64 after checking it is a permutation of 0..N-1."""
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got shape {array.shape}")
    array = array.astype(np.int64)
    if not np.array_equal(np.sort(array), np.arange(array.size)):
        raise ValueError(f"{name} must be a permutation of 0..{array.size - 1}")
    return array
