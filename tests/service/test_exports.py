"""Markdown and LaTeX exports: one majority-rate row per test set, never one group's for all."""

from __future__ import annotations

from typing import Any

from service.exports import render


def _group(pe: str, rate: float) -> dict[str, Any]:
    metric = {"mean": 80.0, "std": 1.0, "n": 2, "ci95": [70.0, 90.0]}
    return {
        "key": {"pe.name": pe},
        "metrics": {"average": metric},
        "runs": [1, 2],
        "diverged": 0,
        "failed": 0,
        "baseline": {"average": rate},
    }


def _comparison(*groups: dict[str, Any]) -> dict[str, Any]:
    return {"groups": list(groups), "group_by": ["pe.name"], "baseline_pe": None}


def test_groups_on_one_test_set_share_one_majority_row() -> None:
    text = render(_comparison(_group("none", 55.6), _group("loope", 55.6)), "markdown")
    assert text.count("majority rate") == 1
    assert "| majority rate |  | 55.60 |  |" in text


def test_groups_on_different_test_sets_get_their_own_majority_rows() -> None:
    comparison = _comparison(_group("learnable", 54.6), _group("loope", 65.0))
    markdown = render(comparison, "markdown")
    assert "| majority rate of learnable |  | 54.60 |" in markdown
    assert "| majority rate of loope |  | 65.00 |" in markdown
    latex = render(comparison, "latex")
    assert r"majority rate of learnable &  & 54.60 &  \\" in latex
    assert r"majority rate of loope &  & 65.00 &  \\" in latex
