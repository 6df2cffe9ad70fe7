"""Comparisons of finished runs: groups of runs that differ only by seed, with statistics.

Each group gets, per metric, the mean, sample standard deviation, n and a 95 % t-interval
over its succeeded runs, and counts of diverged and failed runs. Against a baseline PE,
each group is compared by a paired t-test over the seeds both groups ran, and the p-values
of all tests in one comparison are adjusted together by Holm's step-down method.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from scipy import stats

from service.db import RunStatus
from service.store import RunRow

THREE_CELL_GROUPS = ("distance", "orientation", "area", "vector_sum", "average")
BASELINE_PREFIX = "baseline/"
PE_FIELD = "pe.name"

Verdict = Literal["significant", "not significant", "no test"]


@functools.lru_cache(maxsize=1024)
def _t_quantile(dof: int) -> float:
    return float(stats.t.ppf(0.975, dof))


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
        mean = math.fsum(values) / n
        if n < 2:
            return cls(mean, math.nan, n, (math.nan, math.nan))
        deviations = [v - mean for v in values]
        std = math.sqrt(math.fsum(map(operator.mul, deviations, deviations)) / (n - 1))
        half = _t_quantile(n - 1) * std / math.sqrt(n)
        return cls(mean, std, n, (mean - half, mean + half))


@dataclass
class PairedTest:
    """A group against the baseline PE over shared seeds; `p_holm` is the adjusted p."""

    baseline: dict[str, Any]
    pairs: int
    mean_difference: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    verdict: Verdict = "no test"
    reason: str | None = None


@dataclass
class Group:
    """Runs sharing the grouping fields; `metrics` holds each metric's statistic."""

    key: dict[str, Any]
    run_ids: list[int] = field(default_factory=list)
    diverged: int = 0
    failed: int = 0
    metrics: dict[str, Statistic] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    tests: dict[str, PairedTest] = field(default_factory=dict)
    # metric -> seed -> value of the latest succeeded run of that seed
    by_seed: dict[str, dict[int, float]] = field(default_factory=dict)
    # (run id, seed) of each succeeded run, in id order
    succeeded: list[tuple[int, int]] = field(default_factory=list)


def field_value(canonical: dict[str, Any], path: str) -> Any:
    """A spec field by dotted path, e.g. `pe.name` or `dataset.preset`."""
    value: Any = canonical
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def compare(
    runs: Sequence[RunRow],
    specs: dict[int, dict[str, Any]],
    values: dict[str, dict[int, float]],
    group_by: Sequence[str],
    prefix: str = "test/",
    baseline_pe: str | None = None,
    alpha: float = 0.05,
) -> list[Group]:
    """Group runs by the `group_by` spec fields and summarise their `prefix` metrics.

    `values` maps each metric key to the last value of every run that reported it.
    """
    spec_keys = {
        spec_id: tuple(field_value(canonical, path) for path in group_by)
        for spec_id, canonical in specs.items()
    }
    groups: dict[tuple, Group] = {}
    for run_id, spec_id, seed, status in sorted(runs):
        key = spec_keys[spec_id]
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(dict(zip(group_by, key, strict=True)))
        if status == RunStatus.SUCCEEDED:
            group.run_ids.append(run_id)
            group.succeeded.append((run_id, seed))
        elif status == RunStatus.DIVERGED:
            group.diverged += 1
        elif status == RunStatus.FAILED:
            group.failed += 1
    for group in groups.values():
        _collect(group, values, prefix)
        group.metrics = {
            name: Statistic.of(list(by_seed.values()))
            for name, by_seed in sorted(group.by_seed.items())
        }
    if baseline_pe is not None:
        _paired_tests(list(groups.values()), group_by, baseline_pe, alpha)
    return sorted(groups.values(), key=lambda g: tuple(map(str, g.key.values())))


def _collect(group: Group, values: dict[str, dict[int, float]], prefix: str) -> None:
    """File the group's last values by metric and seed (a later run of a seed wins), and
    average its `baseline/` values over all its runs."""
    for key, by_run in sorted(values.items()):
        if key.startswith(prefix):
            # Runs come in id order, so a later run of the same seed overwrites an earlier.
            by_seed = {seed: by_run[run] for run, seed in group.succeeded if run in by_run}
            if by_seed:
                group.by_seed[key.removeprefix(prefix)] = by_seed
        elif key.startswith(BASELINE_PREFIX):
            found = [by_run[run] for run, _ in group.succeeded if run in by_run]
            if found:
                group.baseline[key.removeprefix(BASELINE_PREFIX)] = math.fsum(found) / len(found)


def _paired_tests(
    groups: list[Group], group_by: Sequence[str], baseline_pe: str, alpha: float
) -> None:
    """Test each non-baseline group against its baseline twin; Holm-adjust per metric.

    The family of one metric is its comparisons of every PE with the baseline; adjusting
    over all metrics at once would make the many per-bit scores swamp the headline one.
    """
    if PE_FIELD not in group_by:
        raise ValueError(f"baseline_pe needs {PE_FIELD!r} among the group_by fields")
    others = [path for path in group_by if path != PE_FIELD]
    twins = {tuple(g.key[p] for p in others): g for g in groups if g.key[PE_FIELD] == baseline_pe}
    families: dict[str, list[PairedTest]] = {}
    for group in groups:
        twin = twins.get(tuple(group.key[p] for p in others))
        if group.key[PE_FIELD] == baseline_pe or twin is None:
            continue
        for metric, values in group.by_seed.items():
            test = _paired(values, twin.by_seed.get(metric, {}), twin.key)
            group.tests[metric] = test
            families.setdefault(metric, []).append(test)
    for family in families.values():
        holm(family, alpha)


def _paired(values: dict[int, float], base: dict[int, float], key: dict[str, Any]) -> PairedTest:
    shared = values.keys() & base.keys()
    if _all_finite(values) and _all_finite(base):
        seeds = sorted(shared)
    else:
        isfinite = math.isfinite
        seeds = sorted(s for s in shared if isfinite(values[s]) and isfinite(base[s]))
    test = PairedTest(baseline=dict(key), pairs=len(seeds))
    if len(seeds) < 2:
        test.reason = f"{len(seeds)} shared seed(s) with finite values; a test needs 2"
        return test
    differences = [values[s] - base[s] for s in seeds]
    test.mean_difference = math.fsum(differences) / len(differences)
    if max(differences) == min(differences):
        test.reason = "the differences are all equal, so their variance is zero"
        return test
    result = stats.ttest_rel([values[s] for s in seeds], [base[s] for s in seeds])
    test.p_value = float(result.pvalue)
    return test


def holm(tests: Sequence[PairedTest], alpha: float) -> None:
    """Holm's step-down adjustment over every test that has a p-value; sets the verdicts."""
    ranked = sorted((t for t in tests if t.p_value is not None), key=lambda t: t.p_value)
    running = 0.0
    for rank, test in enumerate(ranked):
        assert test.p_value is not None
        running = max(running, min(1.0, (len(ranked) - rank) * test.p_value))
        test.p_holm = running
        test.verdict = "significant" if running < alpha else "not significant"


def _all_finite(values: dict[int, float]) -> bool:
    return all(map(math.isfinite, values.values()))
