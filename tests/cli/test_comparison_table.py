"""The comparison table's majority-rate rows: one per test set, never one group's for all."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from loope.cli.client import comparison_table
from loope.cli.demo import significance_note


def _group(pe: str, rate: float, seeds: int = 2) -> dict[str, Any]:
    metric = {"mean": 80.0, "std": 1.0, "n": seeds}
    return {
        "key": {"pe.name": pe},
        "metrics": {"test/average": metric},
        "diverged": 0,
        "baseline": {"test/average": rate},
    }


def _rendered(groups: list[dict[str, Any]]) -> str:
    comparison = {"groups": groups, "group_by": ["pe.name"], "baseline_pe": None}
    console = Console(width=200, record=True)
    console.print(comparison_table(comparison))
    return console.export_text()


def test_groups_on_one_test_set_share_one_majority_row() -> None:
    text = _rendered([_group("none", 55.6), _group("loope", 55.6)])
    assert text.count("majority rate") == 1 and "55.6" in text


def test_groups_on_different_test_sets_get_their_own_majority_rows() -> None:
    text = _rendered([_group("learnable", 54.6), _group("loope", 65.0)])
    assert "majority rate of learnable" in text and "majority rate of loope" in text
    assert "54.6" in text and "65.0" in text


def test_the_significance_note_counts_the_smallest_groups_seeds() -> None:
    three = {"groups": [_group("none", 55.6, seeds=3), _group("loope", 55.6, seeds=3)]}
    assert "(with 3 seeds a test has 2 degrees of freedom)" in significance_note(three)
    uneven = {"groups": [_group("none", 55.6, seeds=3), _group("loope", 55.6, seeds=2)]}
    assert "(with 2 seeds a test has 1 degree of freedom)" in significance_note(uneven)


def test_a_comparison_without_finished_runs_names_no_metric_in_its_test_column() -> None:
    empty = {"groups": [], "group_by": ["pe.name"], "baseline_pe": "none"}
    console = Console(width=200, record=True)
    console.print(comparison_table(empty))
    text = console.export_text()
    assert "None" not in text and "vs none" in text
