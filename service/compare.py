"""Comparisons of finished runs: groups of runs that differ only by seed, with statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy import stats

from service.db import MetricSummary, Run, RunStatus, Spec
from service.metrics import restore

THREE_CELL_GROUPS = ("distance", "orientation", "area", "vector_sum", "average")


@dataclass(frozen=True)
class Statistic:
    """Mean, sample standard deviation, count and a 95 % t-interval of one metric."""

    mean: float
    std: float
    n: int
    ci95: tuple[float, float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Statistic:
        n = len(values)
        mean = sum(values) / n
        if n < 2:
            return cls(mean, math.nan, n, (math.nan, math.nan))
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
        return cls(mean, std, n, (mean - half, mean + half))


@dataclass
class Group:
    """Runs sharing the grouping fields; `metrics` holds each metric's statistic."""

    key: dict[str, Any]
    run_ids: list[int] = field(default_factory=list)
    diverged: int = 0
    failed: int = 0
    metrics: dict[str, Statistic] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)


def field_value(spec: Spec, path: str) -> Any:
    """A spec field by dotted path, e.g. `pe.name` or `dataset.preset`."""
    value: Any = spec.canonical
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def compare(
    rows: Sequence[tuple[Run, Spec]],
    summaries: dict[int, dict[str, MetricSummary]],
    group_by: Sequence[str],
    prefix: str = "test/",
) -> list[Group]:
    """Group runs by the `group_by` spec fields and summarise their `prefix` metrics."""
    groups: dict[tuple, Group] = {}
    values: dict[tuple, dict[str, list[float]]] = {}
    for run, spec in rows:
        key_values = tuple(field_value(spec, path) for path in group_by)
        group = groups.setdefault(key_values, Group(dict(zip(group_by, key_values, strict=True))))
        if run.status == RunStatus.DIVERGED:
            group.diverged += 1
        elif run.status == RunStatus.FAILED:
            group.failed += 1
        if run.status != RunStatus.SUCCEEDED:
            continue
        group.run_ids.append(run.id)
        _collect(summaries.get(run.id, {}), prefix, values.setdefault(key_values, {}), group)
    for key_values, group in groups.items():
        metric_values = values.get(key_values, {})
        group.metrics = {name: Statistic.of(vals) for name, vals in sorted(metric_values.items())}
    return list(groups.values())


def _collect(
    run_summaries: dict[str, MetricSummary],
    prefix: str,
    into: dict[str, list[float]],
    group: Group,
) -> None:
    baseline_values: dict[str, list[float]] = {}
    for key, summary in run_summaries.items():
        value = restore(summary.last, summary.last_kind)
        if key.startswith(prefix):
            into.setdefault(key.removeprefix(prefix), []).append(value)
        elif key.startswith("baseline/"):
            baseline_values.setdefault(key.removeprefix("baseline/"), []).append(value)
    for name, vals in baseline_values.items():
        group.baseline[name] = sum(vals) / len(vals)
