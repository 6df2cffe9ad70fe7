"""Metric ingest (batched, idempotent) and series reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.deps import StoreDep, UserDep
from api.routes.runs import RunIdPath, existing_run
from api.schemas import MAX_BATCH_POINTS, IngestResult, MetricBatch, MetricKey, Series
from service.metrics import from_json, to_json
from service.store import PointIn

router = APIRouter(tags=["metrics"])


@router.post("/runs/{run_id}/metrics", response_model=IngestResult)
def ingest(run_id: RunIdPath, batch: MetricBatch, store: StoreDep, user: UserDep) -> IngestResult:
    """Store a batch of points; a (key, step) already stored for the attempt is ignored.

    Workers (the service token), the run's owner and admins may report.
    """
    if len(batch.points) > MAX_BATCH_POINTS:
        raise HTTPException(
            413,
            f"batch has {len(batch.points)} points; the limit is {MAX_BATCH_POINTS} "
            "(MAX_BATCH_POINTS)",
        )
    run, _ = existing_run(store, run_id)
    if user.role != "service" and not user.may_change(run.user_id):
        raise HTTPException(403, f"user {user.name!r} may not report metrics of run {run_id}")
    points = [PointIn(p.key, p.step, from_json(p.value)) for p in batch.points]
    stored = store.ingest(run_id, batch.attempt, points)
    return IngestResult(stored=stored, received=len(points))


@router.get("/runs/{run_id}/metrics", response_model=list[str])
def metric_keys(run_id: RunIdPath, store: StoreDep) -> list[str]:
    """The metric keys a run has reported."""
    return store.metric_keys(run_id)


@router.get("/runs/{run_id}/metrics/{key:path}", response_model=Series)
def read_series(
    run_id: RunIdPath,
    key: MetricKey,
    store: StoreDep,
    max_points: Annotated[int, Query(ge=2, le=100_000)] = 1000,
) -> Series:
    """One metric's series, downsampled to at most `max_points`."""
    points = store.series(run_id, key, max_points)
    if not points and store.get_run(run_id) is None:
        raise HTTPException(404, f"run {run_id} does not exist")
    return Series(key=key, steps=[s for s, _ in points], values=[to_json(v) for _, v in points])
