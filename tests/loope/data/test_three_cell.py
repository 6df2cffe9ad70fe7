"""Tests of the Three-Cell benchmark: labels by hand, generator invariants, images, scoring."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loope.data.three_cell import (
    BIT_KEYS,
    BIT_NAMES,
    GROUPS,
    PRESETS,
    ThreeCellConfig,
    ThreeCellDataset,
    ThreeCellSet,
    generate,
    label_stats,
    labels_for,
    save_png,
    score,
)

# Hand-worked triples on a 5×5 grid (g − 1 = 4), positions as (row, col) of R, G, B.
# x = col, y = row. |RG|², |RB|², Δ, doubled areas and coordinate sums are in the comments.
HAND_CASES: list[tuple[str, list[list[int]], list[int], list[int]]] = [
    # |RG|²=4 > |RB|²=1; Δ=2·1−0·0=2; areas 0·2=0 and 1·0=0 equal; sums x=2, y=1
    ("g_farther_zero_areas", [[0, 0], [0, 2], [1, 0]], [1, 0, 1, 0, 0, 0], [1, 0, 1, 0, 0, 0]),
    # |RG|²=|RB|²=1 equal; Δ=1·1−0·0=1; areas |4·1|=4 > |5·0|=0; sums x=7, y=7
    ("equal_dist_rg_area", [[2, 2], [2, 3], [3, 2]], [0, 0, 1, 1, 0, 1], [0, 0, 1, 1, 0, 1]),
    # G and B swapped: Δ=−1; areas 0 < 4
    ("equal_dist_rb_area", [[2, 2], [3, 2], [2, 3]], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]),
    # |RG|²=1 < |RB|²=9; Δ=1·(−3)−0·0=−3; areas |8·1|=8 > |5·0|=0; sums x=1, y=9
    ("b_farther_only_y_sum", [[4, 0], [4, 1], [1, 0]], [0, 1, 0, 1, 0, 0], [0, 1, 0, 1, 0, 1]),
    # |RG|²=4 < |RB|²=5; Δ=2·2−0·(−1)=4; areas |2·2|=4 = |4·(−1)|=4; sums x=4 (not > 4), y=5
    ("equal_nonzero_areas", [[1, 1], [1, 3], [3, 0]], [0, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 1]),
    # collinear on row 0: Δ=0 gives bit 2 = 0; |RG|²=1 < |RB|²=4; areas 0 and 0
    ("collinear", [[0, 0], [0, 1], [0, 2]], [0, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]),
    # |RG|²=1 < |RB|²=2; Δ=(−1)(−1)−0·(−1)=1; areas |8·(−1)|=8 > |7·(−1)|=7; sums x=10, y=11
    ("both_sums_high", [[4, 4], [4, 3], [3, 3]], [0, 1, 1, 1, 0, 1], [0, 1, 1, 1, 0, 1]),
]


@pytest.mark.parametrize(("name", "triple", "both", "either"), HAND_CASES)
def test_labels_by_hand(name: str, triple: list[list[int]], both: list[int], either: list[int]):
    positions = np.array([triple])
    assert labels_for(positions, grid=5, vector_sum_rule="both")[0].tolist() == both
    assert labels_for(positions, grid=5, vector_sum_rule="either")[0].tolist() == either


def test_labels_cover_every_bit_both_ways():
    positions = np.array([case[1] for case in HAND_CASES])
    labels = labels_for(positions, grid=5)
    assert labels.dtype == np.uint8
    assert labels.shape == (len(HAND_CASES), 6)
    assert labels.any(axis=0).all() and (~labels.astype(bool)).any(axis=0).all()


def test_labels_reject_bad_shape():
    with pytest.raises(ValueError, match=r"\(n, 3, 2\)"):
        labels_for(np.zeros((4, 3)), grid=5)


def test_vector_sum_threshold_is_strict_and_scales_with_grid():
    # sums x = y = 7: above g − 1 = 6 for g = 7, not above g − 1 = 7 for g = 8
    positions = np.array([[[0, 0], [3, 3], [4, 4]]])
    assert labels_for(positions, grid=7)[0, 5] == 1
    assert labels_for(positions, grid=8)[0, 5] == 0


def small(**overrides) -> ThreeCellConfig:
    return ThreeCellConfig(**{"grid": 6, "cell": 3, "n": 300, **overrides})


def test_generate_is_deterministic_per_seed():
    first, again, other = generate(small(seed=3)), generate(small(seed=3)), generate(small(seed=4))
    np.testing.assert_array_equal(first.positions, again.positions)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.array_equal(first.positions, other.positions)


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_generated_positions_are_valid(name: str):
    config = PRESETS[name]
    samples = generate(config)
    pos = samples.positions
    assert pos.shape == (config.n, 3, 2) and np.issubdtype(pos.dtype, np.integer)
    assert pos.min() >= 0 and pos.max() < config.grid

    cells = pos[..., 0] * config.grid + pos[..., 1]  # (n, 3) flat cell index
    assert (cells[:, 0] != cells[:, 1]).all() and (cells[:, 0] != cells[:, 2]).all()
    assert (cells[:, 1] != cells[:, 2]).all()

    g_off, b_off = pos[:, 1] - pos[:, 0], pos[:, 2] - pos[:, 0]
    assert (g_off[:, 1] * b_off[:, 0] - g_off[:, 0] * b_off[:, 1] != 0).all()
    assert ((g_off**2).sum(1) <= 2 * (config.grid - 1) ** 2).all()
    np.testing.assert_array_equal(samples.labels, labels_for(pos, config.grid))


def test_modes_are_balanced():
    pos = generate(ThreeCellConfig(grid=8, cell=1, n=4000, seed=1)).positions
    dist_rg = ((pos[:, 1] - pos[:, 0]) ** 2).sum(axis=1)
    dist_rb = ((pos[:, 2] - pos[:, 0]) ** 2).sum(axis=1)
    rates = [np.mean(dist_rg == dist_rb), np.mean(dist_rg < dist_rb), np.mean(dist_rg > dist_rb)]
    assert rates == pytest.approx([1 / 3] * 3, abs=0.04)


def test_max_sq_len_bounds_offsets():
    pos = generate(small(max_sq_len=5)).positions
    assert (((pos[:, 1:] - pos[:, :1]) ** 2).sum(axis=2) <= 5).all()


def test_collinear_triples_appear_only_when_allowed():
    pos = generate(small(grid=4, n=2000, reject_collinear=False)).positions
    g_off, b_off = pos[:, 1] - pos[:, 0], pos[:, 2] - pos[:, 0]
    assert (g_off[:, 1] * b_off[:, 0] - g_off[:, 0] * b_off[:, 1] == 0).any()
    assert (g_off != b_off).any(axis=1).all()


def test_render_paints_exact_cells():
    config = ThreeCellConfig(grid=5, cell=3, n=1)
    samples = ThreeCellSet(config, np.array([[[0, 4], [2, 1], [4, 0]]]), np.zeros((1, 6), np.uint8))
    image = samples.render(0)
    assert image.shape == (3, 15, 15) and image.dtype == np.uint8

    expected = np.zeros_like(image)
    expected[:, 0:3, 12:15] = np.array([255, 0, 0])[:, None, None]  # R at row 0, col 4
    expected[:, 6:9, 3:6] = np.array([0, 255, 0])[:, None, None]  # G at row 2, col 1
    expected[:, 12:15, 0:3] = np.array([0, 0, 255])[:, None, None]  # B at row 4, col 0
    np.testing.assert_array_equal(image, expected)


def test_render_all_matches_render():
    samples = generate(small(n=20))
    images = samples.render_all()
    assert images.shape == (20, 3, 18, 18)
    for index in (0, 7, 19):
        np.testing.assert_array_equal(images[index], samples.render(index))
    assert (images == 255).sum() == 20 * 3 * 9  # three 3×3 cells of one channel each


def test_splits_are_disjoint_and_80_10_10():
    samples = generate(small(n=100))
    parts = [samples.split(name) for name in ("train", "val", "test")]
    assert [len(part) for part in parts] == [80, 10, 10]
    assert [part.part for part in parts] == ["train", "val", "test"]
    joined = np.concatenate([part.positions for part in parts])
    np.testing.assert_array_equal(joined, samples.positions)
    with pytest.raises(ValueError, match="split 'all'"):
        parts[0].split("val")


@pytest.mark.parametrize("cache", [True, False])
def test_dataset_items(cache: bool):
    samples = generate(small(n=10))
    dataset = ThreeCellDataset(samples, cache=cache)
    image, labels = dataset[3]
    assert len(dataset) == 10
    assert image.dtype == torch.float32 and image.shape == (3, 18, 18)
    assert labels.dtype == torch.float32 and labels.shape == (6,)
    torch.testing.assert_close(image, torch.from_numpy(samples.render(3)).float() / 255)
    assert labels.tolist() == samples.labels[3].tolist()


def test_score_by_hand():
    labels = np.array([[1, 0, 1, 0, 1, 1], [0, 1, 0, 0, 1, 0]])
    predictions = np.array([[1, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 0]], dtype=bool)
    result = score(predictions, labels)
    assert [result[key] for key in BIT_KEYS] == [100.0, 50.0, 50.0, 50.0, 100.0, 100.0]
    assert result["distance"] == 75.0 and result["orientation"] == 50.0
    assert result["area"] == 75.0 and result["vector_sum"] == 100.0
    assert result["average"] == 75.0


def test_score_refuses_logits_and_shape_mismatch():
    labels = np.zeros((2, 6))
    with pytest.raises(ValueError, match="0/1"):
        score(np.full((2, 6), 0.7), labels)
    with pytest.raises(ValueError, match="shape"):
        score(np.zeros((3, 6)), labels)


def test_label_stats_by_hand():
    labels = np.array(
        [[1, 0, 1, 0, 0, 1], [0, 1, 1, 1, 0, 1], [0, 0, 1, 1, 0, 1], [0, 0, 0, 1, 1, 0]]
    )
    stats = label_stats(labels)
    assert [stats["positive"][key] for key in BIT_KEYS] == [25.0, 25.0, 75.0, 75.0, 25.0, 75.0]
    majority = stats["majority"]
    assert [majority[key] for key in BIT_KEYS] == [75.0] * 6
    assert {majority[group] for group in GROUPS} == {75.0} and majority["average"] == 75.0


def test_names_and_groups():
    assert len(BIT_NAMES) == 6
    assert sorted(bit for bits in GROUPS.values() for bit in bits) == list(range(6))
    assert list(GROUPS) == ["distance", "orientation", "area", "vector_sum"]


def test_presets():
    paper = PRESETS["paper"]
    assert (paper.grid, paper.cell, paper.n, paper.image_size) == (14, 16, 10_000, 224)
    assert paper.vector_sum_rule == "both" and paper.reject_collinear
    assert PRESETS["quick"].image_size * PRESETS["quick"].n < paper.image_size * paper.n


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"grid": 2}, r"grid=2: must be an int >= 3"),
        ({"cell": 0}, r"cell=0: must be an int >= 1"),
        ({"n": 0}, r"n=0"),
        ({"seed": -1}, r"seed=-1"),
        ({"split": (0.8, 0.1, 0.2)}, r"split=.*sum to 1"),
        ({"split": (0.8, 0.2)}, r"split=.*three fractions"),
        ({"split": (1.2, -0.1, -0.1)}, r"split=.*>= 0"),
        ({"max_sq_len": 1}, r"max_sq_len=1: .*\[2, 2\(g-1\)\^2 = 338\]"),
        ({"max_sq_len": 339}, r"max_sq_len=339"),
        ({"vector_sum_rule": "any"}, r"vector_sum_rule='any'"),
    ],
)
def test_config_validation(overrides: dict, message: str):
    with pytest.raises(ValueError, match=message):
        ThreeCellConfig(**overrides)


def test_save_png(tmp_path: Path):
    samples = generate(small(n=4))
    save_png(samples, tmp_path / "out")

    with open(tmp_path / "out" / "labels.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["file", *BIT_KEYS]
    assert len(rows) == 5
    for index, row in enumerate(rows[1:]):
        assert [int(bit) for bit in row[1:]] == samples.labels[index].tolist()
        pixels = np.asarray(Image.open(tmp_path / "out" / row[0]).convert("RGB"))
        np.testing.assert_array_equal(pixels.transpose(2, 0, 1), samples.render(index))
