"""Comparisons of finished runs: groups of runs that differ only by seed, with statistics.

Each group gets, per metric, the mean, sample standard deviation, n and a 95 % t-interval
over its succeeded runs, and counts of diverged and failed runs. Against a baseline PE,
each group is compared by a paired t-test over the seeds both groups ran, and the p-values
of each metric's tests are adjusted together by Holm's step-down method.

A comparison may span thousands of runs, so the per-run work is done by C-level built-ins
(`map` over dict lookups, `zip` into dicts) and the t-tests by numpy over whole arrays;
Python loops run per group and metric, not per run.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import special, stats

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
    # metric -> seed -> value of the latest succeeded run of that seed that reported it
    by_seed: dict[str, dict[int, float]] = field(default_factory=dict)
    # the seed of each run in `run_ids` (its succeeded runs, in id order)
    seeds: list[int] = field(default_factory=list)


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
    groups = _group_runs(runs, spec_keys, group_by)
    for group in groups.values():
        _collect(group, values, prefix)
        group.metrics = {
            name: Statistic.of(list(by_seed.values()))
            for name, by_seed in sorted(group.by_seed.items())
        }
    if baseline_pe is not None:
        _paired_tests(list(groups.values()), group_by, baseline_pe, alpha)
    return sorted(groups.values(), key=lambda g: tuple(map(str, g.key.values())))


_SUCCEEDED, _DIVERGED, _FAILED = (
    RunStatus.SUCCEEDED.value,
    RunStatus.DIVERGED.value,
    RunStatus.FAILED.value,
)


def _group_runs(
    runs: Sequence[RunRow], spec_keys: dict[int, tuple], group_by: Sequence[str]
) -> dict[tuple, Group]:
    """The groups in order of their first run; each group's succeeded runs in id order.

    Runs of one spec always share a group, so the group is looked up once per spec.
    """
    groups: dict[tuple, Group] = {}
    of_spec: dict[int, Group] = {}
    for run_id, spec_id, seed, status in sorted(runs):
        group = of_spec.get(spec_id)
        if group is None:
            values = spec_keys[spec_id]
            key = _hashable(values)
            group = groups.get(key)
            if group is None:
                group = groups[key] = Group(dict(zip(group_by, values, strict=True)))
            of_spec[spec_id] = group
        if status == _SUCCEEDED:
            group.run_ids.append(run_id)
            group.seeds.append(seed)
        elif status == _DIVERGED:
            group.diverged += 1
        elif status == _FAILED:
            group.failed += 1
    return groups


def _hashable(value: Any) -> Any:
    """A grouping key for spec values, lists and dicts included (`dataset.fractions`,
    `pe.options`): equal values give equal keys."""
    if isinstance(value, list | tuple):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((name, _hashable(item)) for name, item in value.items()))
    return value


def _collect(group: Group, values: dict[str, dict[int, float]], prefix: str) -> None:
    """File the group's last values by metric and seed (a later run of a seed wins), and
    average its `baseline/` values over all its runs."""
    for key, by_run in sorted(values.items()):
        if key.startswith(prefix):
            by_seed = _by_seed(group, by_run)
            if by_seed:
                group.by_seed[key.removeprefix(prefix)] = by_seed
        elif key.startswith(BASELINE_PREFIX):
            found = [value for value in map(by_run.get, group.run_ids) if value is not None]
            if found:
                group.baseline[key.removeprefix(BASELINE_PREFIX)] = math.fsum(found) / len(found)


def _by_seed(group: Group, by_run: dict[int, float]) -> dict[int, float]:
    """Seed -> value of the group's latest run of that seed that has a value in `by_run`.

    Runs are in id order, so building the dict in that order lets a later run overwrite an
    earlier one of the same seed; a run without a value (None) must not overwrite.
    """
    found = list(map(by_run.get, group.run_ids))
    if None not in found:
        return dict(zip(group.seeds, found, strict=True))
    return {
        seed: value for seed, value in zip(group.seeds, found, strict=True) if value is not None
    }


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
    differences = np.fromiter(map(values.__getitem__, seeds), float, len(seeds))
    differences -= np.fromiter(map(base.__getitem__, seeds), float, len(seeds))
    test.mean_difference = math.fsum(differences.tolist()) / len(seeds)
    if differences.max() == differences.min():
        test.reason = "the differences are all equal, so their variance is zero"
        return test
    test.p_value = paired_p_value(differences)
    return test


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided p of a paired t-test from the per-seed differences (at least 2, not all
    equal): t is their mean over its standard error, on n - 1 degrees of freedom.

    The variance is the mean squared deviation scaled by n / (n - 1), and the mean is
    numpy's, so the p equals scipy.stats.ttest_rel's to the last bit, without its
    per-call overhead (about a millisecond, which dominated a comparison's tests).
    """
    n = differences.size
    mean = differences.mean()
    deviations = differences - mean
    variance = np.mean(deviations * deviations) * (n / (n - 1))
    t = mean / np.sqrt(variance / n)
    return float(2 * special.stdtr(n - 1, -abs(t)))


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
