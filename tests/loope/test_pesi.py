"""PESI: the paper's table for 1-D sinusoids, hand-computed tiny grids, and a loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from loope.orders import patch_ranks
from loope.pesi import PESI, cosine_similarity_maps, pesi


def sinusoid(positions: np.ndarray, width: int) -> np.ndarray:
    """Interleaved 1-D sinusoid: E(x)[2k] = sin(x w_k), E(x)[2k+1] = cos(x w_k)."""
    frequency = 10000.0 ** (-2.0 * np.arange(width // 2) / width)  # w_k, (D/2,)
    angle = positions[:, None] * frequency[None, :]  # (N, D/2)
    pe = np.empty((positions.size, width))
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle)
    return pe


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("raster", PESI(M_U=1.9567, M_D=1.4905, A_SU=0.1243)),  # "1-D sinusoid"
        ("gilbert", PESI(M_U=1.9674, M_D=1.2900, A_SU=0.0939)),  # "LOOPE" with X_C = 0
    ],
)
def test_paper_table_for_sinusoid_over_an_order(order: str, expected: PESI) -> None:
    position = patch_ranks(order, 14, 14).astype(np.float64) + 1.0  # the paper's ranks 1..N
    pe_grid = sinusoid(position, 768).reshape(14, 14, 768)  # (N, D) -> (h, w, D)

    result = pesi(pe_grid, buckets=60)

    rounded = {name: round(value, 4) for name, value in result.to_dict().items()}
    assert rounded == expected.to_dict()


# Three cells in a line with PEs e0 = (1, 0), e1 = (1, 1), e2 = (1, -1):
# cos(e0, e1) = cos(e0, e2) = 1/sqrt(2) and cos(e1, e2) = 0, so ties occur on both sides.
LINE_PE = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0]])
R = 1.0 - math.sqrt(3.0) / 2.0  # 1 - rho for rho = -sqrt(3)/2


def test_three_cells_in_a_row_by_hand() -> None:
    # With one sector, M_D is Spearman(d, E) over all cells of each centre.
    #   centre 0: d = (0, 1, 2),  E = (1, s, s)  -> rho = -1.5 / sqrt(2 * 1.5) = -sqrt(3)/2
    #   centre 1: d = (1, 0, 1),  E = (s, 1, 0)  -> rho = -1.5 / sqrt(1.5 * 2) = -sqrt(3)/2
    #   centre 2: d = (2, 1, 0),  E = (s, 0, 1)  -> rho = -1 / 2
    # M_U uses the bin means: centre 0 as above, centre 1 has two bins (rho = -1), centre 2
    # has bins (0, 1, 2) with means (1, 0, s) -> rho = -1/2.
    # A_SU: only centre 1 has a bin with two cells, (s, 0): std / mean = 1, next to the
    # centre's bin with 0, so (0 + 1) / 2 for centre 1 and 0 elsewhere.
    result = pesi(LINE_PE.reshape(1, 3, 2), buckets=1)

    expected = [((2 - R) + 2 + 1.5) / 3, (2 * (2 - R) + 1.5) / 3, 0.5 / 3]
    np.testing.assert_allclose([result.M_U, result.M_D, result.A_SU], expected, rtol=1e-12)


def test_sector_angle_takes_the_column_difference_first() -> None:
    # With 4 sectors, sector 0 holds the centre and the cells below it (same column), so a
    # column of cells correlates inside sector 0 while a row of cells does not.
    #   row 1x3: centre 0 -> sector 1 holds (s, s): rho 0; centre 2 -> sector 3 holds d = (2, 1),
    #            E = (s, 0): rho +1. M_D = (1 + 1 + 0.75) / 3.
    #   column 3x1: centre 0 -> sector 0 holds all three: rho -sqrt(3)/2; centre 1 -> sector 0
    #            holds d = (0, 1), E = (1, 0): rho -1; centre 2 -> sector 2 holds rho +1.
    row = pesi(LINE_PE.reshape(1, 3, 2), buckets=4)
    column = pesi(LINE_PE.reshape(3, 1, 2), buckets=4)

    assert math.isclose(row.M_D, 2.75 / 3, rel_tol=1e-12)
    assert math.isclose(column.M_D, (1 + (1 - R) / 4 + 1.25 + 0.75) / 3, rel_tol=1e-12)


def test_constant_pe_has_undefined_rho_counted_as_zero() -> None:
    # Every similarity is exactly 1: each Spearman rho is undefined and counts as 0.
    result = pesi(np.ones((4, 5, 4)), buckets=60)
    assert result == PESI(M_U=1.0, M_D=1.0, A_SU=0.0)


def test_zero_mean_distance_bin_makes_asymmetry_nan() -> None:
    # The middle cell's neighbours have similarities (0, 0): std / mean is undefined there.
    pe_grid = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    result = pesi(pe_grid, buckets=4)
    assert math.isnan(result.A_SU)
    assert math.isfinite(result.M_U) and math.isfinite(result.M_D)


def _reference_pesi(pe_grid: np.ndarray, buckets: int) -> tuple[float, float, float]:
    """Cell-by-cell PESI with scipy's Spearman, for comparison with the vectorised one."""
    h, w, _ = pe_grid.shape
    similarity = cosine_similarity_maps(pe_grid).reshape(h * w, h * w)
    row, col = np.divmod(np.arange(h * w), w)
    m_u, m_d, a_su = [], [], []
    for centre in range(h * w):
        d_row, d_col = row - row[centre], col - col[centre]
        distance, values = np.hypot(d_row, d_col), similarity[centre]
        radius = np.rint(distance)
        bins = np.unique(radius)
        means = [values[radius == r].mean() for r in bins]
        m_u.append(1 - _spearman_or_zero(bins, np.array(means)))
        a_su.append(np.mean([values[radius == r].std() / values[radius == r].mean() for r in bins]))
        sector = np.floor(np.arctan2(d_col, d_row) / (2 * np.pi / buckets)).astype(int) % buckets
        rho = [
            _spearman_or_zero(distance[sector == k], values[sector == k]) for k in range(buckets)
        ]
        m_d.append(1 - np.mean(rho))
    return float(np.mean(m_u)), float(np.mean(m_d)), float(np.mean(a_su))


def _spearman_or_zero(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho, 0 for fewer than two values or a constant side."""
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    return float(spearmanr(x, y).statistic)


@pytest.mark.parametrize(("h", "w", "buckets"), [(5, 7, 12), (6, 4, 60), (1, 9, 8)])
def test_matches_a_cell_by_cell_reference_with_ties(h: int, w: int, buckets: int) -> None:
    rng = np.random.default_rng(h * 100 + w)
    # Coarse values repeat whole vectors, so similarities and bin means tie exactly.
    pe_grid = rng.integers(-2, 3, size=(h, w, 3)) + 0.25

    result = pesi(pe_grid, buckets=buckets)

    expected = _reference_pesi(pe_grid, buckets)
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose([result.M_U, result.M_D, result.A_SU], expected, rtol=1e-12)


def test_similarity_maps_shape_and_meaning() -> None:
    pe_grid = np.random.default_rng(0).normal(size=(3, 4, 8))
    maps = cosine_similarity_maps(pe_grid)

    assert maps.shape == (3, 4, 3, 4)
    a, b = pe_grid[2, 1], pe_grid[0, 3]
    assert maps[2, 1, 0, 3] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    np.testing.assert_allclose(np.einsum("ijij->ij", maps), 1.0)
    np.testing.assert_allclose(maps, maps.transpose(2, 3, 0, 1))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((196, 768), r"\(h, w, D\).*\(196, 768\)"),
        ((1, 14, 14, 8), r"\(h, w, D\)"),
        ((0, 3, 4), r"\(0, 3, 4\)"),
    ],
)
def test_refuses_pe_grids_of_the_wrong_shape(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pesi(np.ones(shape))
    with pytest.raises(ValueError, match=message):
        cosine_similarity_maps(np.ones(shape))


def test_refuses_zero_vectors_non_finite_values_and_bad_buckets() -> None:
    pe_grid = np.ones((2, 3, 4))
    pe_grid[1, 2] = 0.0
    with pytest.raises(ValueError, match=r"zero vector at cell \(row=1, col=2\)"):
        pesi(pe_grid)
    with pytest.raises(ValueError, match="finite"):
        pesi(np.full((2, 2, 2), np.nan))
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match=rf"buckets={bad}"):
            pesi(np.ones((2, 2, 2)), buckets=bad)  # type: ignore[arg-type]
