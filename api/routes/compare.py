"""Comparisons of PE methods across seeds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import StoreDep
from api.schemas import Comparison, GroupOut, StatisticOut
from service.compare import Group, compare
from service.metrics import to_json

router = APIRouter(tags=["compare"])

DEFAULT_GROUP_BY = ["pe.name", "model.arch", "dataset.name"]


@router.get("/compare", response_model=Comparison)
def comparison(
    store: StoreDep,
    group_by: Annotated[list[str], Query(max_length=8)] = DEFAULT_GROUP_BY,
    metric_prefix: Annotated[str, Query(max_length=64)] = "test/",
    sweep_id: int | None = None,
) -> Comparison:
    """Finished runs grouped by spec fields, with mean ± std, n and a 95 % interval."""
    rows = store.list_runs(sweep_id=sweep_id, limit=1_000_000)
    summaries = store.summaries([run.id for run, _ in rows])
    groups = compare(rows, summaries, group_by, metric_prefix)
    return Comparison(
        group_by=group_by,
        metric_prefix=metric_prefix,
        groups=[_group_out(group) for group in groups],
    )


def _group_out(group: Group) -> GroupOut:
    metrics = {
        name: StatisticOut(
            mean=to_json(s.mean),
            std=to_json(s.std),
            n=s.n,
            ci95=(to_json(s.ci95[0]), to_json(s.ci95[1])),
        )
        for name, s in group.metrics.items()
    }
    return GroupOut(
        key=group.key,
        runs=group.run_ids,
        diverged=group.diverged,
        failed=group.failed,
        metrics=metrics,
        baseline={k: to_json(v) for k, v in group.baseline.items()},
    )
