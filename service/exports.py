"""A comparison as a table: CSV (one row per group and metric), JSON, Markdown and LaTeX.

Exports work on the comparison as the API returns it (plain JSON values, with "nan",
"+inf" and "-inf" as strings), so what a user downloads matches what the API says.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Literal

from service.compare import THREE_CELL_GROUPS

ExportFormat = Literal["csv", "json", "markdown", "latex"]
MEDIA_TYPES: dict[ExportFormat, str] = {
    "csv": "text/csv",
    "json": "application/json",
    "markdown": "text/markdown",
    "latex": "application/x-latex",
}
SUFFIXES: dict[ExportFormat, str] = {"csv": "csv", "json": "json", "markdown": "md", "latex": "tex"}

_CSV_FIELDS = (
    "metric", "n", "mean", "std", "ci95_low", "ci95_high", "runs", "diverged", "failed",
    "majority_rate", "baseline_pe", "pairs", "mean_difference", "p_value", "p_holm", "verdict",
)  # fmt: skip
_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def render(comparison: dict[str, Any], fmt: ExportFormat) -> str:
    if fmt == "json":
        return json.dumps(comparison, indent=2, ensure_ascii=False, allow_nan=False)
    if fmt == "csv":
        return _csv(comparison)
    header, rows = _wide(comparison)
    return _markdown(header, rows) if fmt == "markdown" else _latex(header, rows)


def table_columns(comparison: dict[str, Any]) -> list[str]:
    """The metric columns: the Three-Cell groups in their order when present, else all."""
    names = sorted({name for g in comparison["groups"] for name in g["metrics"]})
    three_cell = [m for m in THREE_CELL_GROUPS if m in names]
    return three_cell or names


def _csv(comparison: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*comparison["group_by"], *_CSV_FIELDS])
    for group in comparison["groups"]:
        key = [group["key"][path] for path in comparison["group_by"]]
        for metric, stat in group["metrics"].items():
            test = group.get("tests", {}).get(metric) or {}
            writer.writerow(
                [
                    *key, metric, stat["n"], stat["mean"], stat["std"], *stat["ci95"],
                    len(group["runs"]), group["diverged"], group["failed"],
                    group["baseline"].get(metric, ""), comparison.get("baseline_pe") or "",
                    test.get("pairs", ""), _blank(test.get("mean_difference")),
                    _blank(test.get("p_value")), _blank(test.get("p_holm")),
                    test.get("verdict", ""),
                ]
            )  # fmt: skip
    return out.getvalue()


def _wide(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the human table: mean ± std per metric, n, diverged, majority row."""
    group_by, columns = comparison["group_by"], table_columns(comparison)
    header = [*group_by, "n", *columns, "diverged"]
    rows = []
    for group in comparison["groups"]:
        cells = [_cell(group, name) for name in columns]
        key = [str(group["key"][path]) for path in group_by]
        rows.append([*key, str(seeds_of(group)), *cells, str(group["diverged"])])
    for label, majority in majority_rows(comparison["groups"], group_by):
        cells = [_number(majority[name]) if name in majority else "" for name in columns]
        rows.append([label, *[""] * len(group_by), *cells, ""])
    return header, rows


def seeds_of(group: dict[str, Any]) -> int:
    """How many seeds a group's numbers rest on: the n of its best-covered metric."""
    return max((stat["n"] for stat in group["metrics"].values()), default=0)


def majority_rows(
    groups: list[dict[str, Any]], keys: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """One "majority rate" row when every group was tested on the same test set; otherwise
    one row per group, named after it, since the rates differ between test sets."""
    tested = [g for g in groups if g.get("baseline")]
    if not tested:
        return []
    if all(g["baseline"] == tested[0]["baseline"] for g in tested):
        return [("majority rate", tested[0]["baseline"])]
    return [
        ("majority rate of " + " ".join(str(g["key"][k]) for k in keys), g["baseline"])
        for g in tested
    ]


def _cell(group: dict[str, Any], metric: str) -> str:
    stat = group["metrics"].get(metric)
    if stat is None:
        return "—"
    text = _number(stat["mean"])
    if not isinstance(stat["std"], str) and not math.isnan(stat["std"]):
        text += f" ± {_number(stat['std'])}"
    test = group.get("tests", {}).get(metric)
    if test and test["verdict"] == "significant":
        text += f" (p={test['p_holm']:.3g})"
    elif test and test["verdict"] == "not significant":
        text += " (n.s.)"
    return text


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", r"\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _latex(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        escaped = ["".join(_LATEX_SPECIAL.get(c, c) for c in cell) for cell in cells]
        return " & ".join(e.replace("±", r"$\pm$") for e in escaped) + r" \\"

    spec = "l" * len(header)
    body = [r"\begin{tabular}{" + spec + "}", r"\toprule", line(header), r"\midrule"]
    body += [line(row) for row in rows] + [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(body) + "\n"


def _number(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.2f}"


def _blank(value: Any) -> Any:
    return "" if value is None else value
