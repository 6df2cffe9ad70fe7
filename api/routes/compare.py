"""Comparisons of PE methods across seeds, and their exports as tables."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel

from api.deps import StoreDep, UserDep
from api.schemas import MAX_DB_INT, Comparison, GroupOut, PairedTestOut, StatisticOut
from loope.pe import PE_REGISTRY
from loope.spec import ExperimentSpec
from service.auth import Principal
from service.compare import BASELINE_PREFIX, Group, PairedTest, compare
from service.exports import MEDIA_TYPES, SUFFIXES, ExportFormat, render
from service.metrics import to_json
from service.store import Store

router = APIRouter(tags=["compare"])

DEFAULT_GROUP_BY = ["pe.name", "model.arch", "dataset.name"]
GroupBy = Annotated[
    list[str], Query(max_length=8, description="dotted spec fields, e.g. pe.name, train.lr")
]
Prefix = Annotated[str, Query(max_length=64, description="which metrics: e.g. test/ or val/")]
BaselinePE = Annotated[
    str | None, Query(max_length=64, description="PE to test every other PE against")
]
Alpha = Annotated[float, Query(gt=0, lt=1, description="significance level after Holm")]
SweepId = Annotated[int | None, Query(ge=1, le=MAX_DB_INT)]


@router.get("/compare", response_model=Comparison)
def comparison(
    store: StoreDep,
    user: UserDep,
    group_by: GroupBy = DEFAULT_GROUP_BY,
    metric_prefix: Prefix = "test/",
    sweep_id: SweepId = None,
    baseline_pe: BaselinePE = None,
    alpha: Alpha = 0.05,
) -> Comparison:
    """Finished runs grouped by spec fields: mean ± std, n, 95 % CI, diverged count, and
    paired t-tests over shared seeds against `baseline_pe`, Holm-adjusted. Private runs of
    other users are left out."""
    return _compare(store, user, group_by, metric_prefix, sweep_id, baseline_pe, alpha)


@router.get("/compare/export", response_class=Response)
def export_comparison(
    store: StoreDep,
    user: UserDep,
    format: Annotated[ExportFormat, Query(description="csv, json, markdown or latex")] = "csv",
    group_by: GroupBy = DEFAULT_GROUP_BY,
    metric_prefix: Prefix = "test/",
    sweep_id: SweepId = None,
    baseline_pe: BaselinePE = None,
    alpha: Alpha = 0.05,
) -> Response:
    """The same comparison as a table to download."""
    result = _compare(store, user, group_by, metric_prefix, sweep_id, baseline_pe, alpha)
    text = render(result.model_dump(mode="json"), format)
    disposition = f'attachment; filename="comparison.{SUFFIXES[format]}"'
    return Response(
        text,
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": disposition},
    )


def _compare(
    store: Store,
    user: Principal,
    group_by: list[str],
    prefix: str,
    sweep_id: int | None,
    baseline_pe: str | None,
    alpha: float,
) -> Comparison:
    _check_fields(group_by)
    if baseline_pe is not None and "pe.name" not in group_by:
        raise HTTPException(422, "baseline_pe: needs 'pe.name' among the group_by fields")
    if baseline_pe is not None and baseline_pe not in PE_REGISTRY:
        known = ", ".join(PE_REGISTRY)
        raise HTTPException(422, f"baseline_pe: unknown PE {baseline_pe!r}; known: {known}")
    runs, specs, values = store.comparison_rows(sweep_id, [prefix, BASELINE_PREFIX], user)
    groups = compare(runs, specs, values, group_by, prefix, baseline_pe, alpha)
    return Comparison(
        group_by=group_by,
        metric_prefix=prefix,
        baseline_pe=baseline_pe,
        alpha=alpha,
        groups=[_group_out(group) for group in groups],
    )


def _spec_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths |= _spec_paths(kind, f"{prefix}{name}.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


# Fields that do not change results are not part of the canonical spec, so not groupable.
SPEC_PATHS = {
    p for p in _spec_paths(ExperimentSpec) if p.split(".")[0] not in ("name", "tags", "resources")
}


def _check_fields(group_by: list[str]) -> None:
    unknown = [p for p in group_by if p not in SPEC_PATHS and not p.startswith("pe.options.")]
    known = ", ".join(sorted(SPEC_PATHS))
    if unknown:
        problems = [
            {"field": "group_by", "message": f"unknown spec field {path!r}; known: {known}"}
            for path in unknown
        ]
        raise HTTPException(422, problems)
    if not group_by:
        raise HTTPException(422, [{"field": "group_by", "message": "name at least one field"}])


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
        tests={name: _test_out(test) for name, test in group.tests.items()},
    )


def _test_out(test: PairedTest) -> PairedTestOut:
    def number(value: float | None) -> float | str | None:
        return None if value is None else to_json(value)

    return PairedTestOut(
        baseline=test.baseline,
        pairs=test.pairs,
        mean_difference=number(test.mean_difference),
        p_value=number(test.p_value),
        p_holm=number(test.p_holm),
        verdict=test.verdict,
        reason=test.reason,
    )
