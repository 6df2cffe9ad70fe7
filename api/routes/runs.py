"""Reading, cancelling and reporting on runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from api.deps import QueueDep, StoreDep
from api.schemas import (
    AttemptOut,
    JsonNumber,
    RunOut,
    RunPage,
)
from service.db import Run, RunStatus, Spec
from service.metrics import restore, to_json
from service.store import Store

router = APIRouter(tags=["runs"])


def run_out(run: Run, spec: Spec, *, detail: bool = False, store: Store | None = None) -> RunOut:
    out = RunOut(
        id=run.id,
        spec_hash=spec.spec_hash,
        sweep_id=run.sweep_id,
        seed=run.seed,
        status=run.status.value,
        priority=run.priority,
        pe=spec.pe,
        arch=spec.arch,
        dataset=spec.dataset,
        attempt=run.attempt,
        failure_kind=run.failure_kind,
        failure_reason=run.failure_reason,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )
    if detail and store is not None:
        out.spec = spec.canonical
        out.summary = _summary(store, run.id)
        out.attempts = [
            AttemptOut.model_validate(a, from_attributes=True) for a in store.attempts(run.id)
        ]
    return out


def _summary(store: Store, run_id: int) -> dict[str, JsonNumber]:
    summaries = store.summaries([run_id])[run_id]
    return {key: to_json(restore(s.last, s.last_kind)) for key, s in summaries.items()}


@router.get("/runs", response_model=RunPage)
def list_runs(
    store: StoreDep,
    status: RunStatus | None = None,
    pe: Annotated[str | None, Query(max_length=64)] = None,
    sweep_id: int | None = None,
    cursor: Annotated[int, Query(ge=0, description="last run id of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RunPage:
    """Runs in id order, filtered; pass `next_cursor` back as `cursor` for the next page."""
    rows = store.list_runs(status=status, pe=pe, sweep_id=sweep_id, after_id=cursor, limit=limit)
    runs = [run_out(run, spec) for run, spec in rows]
    return RunPage(runs=runs, next_cursor=runs[-1].id if len(runs) == limit else None)


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: int, store: StoreDep) -> RunOut:
    """One run with its spec, attempts and the last value of every metric."""
    found = store.get_run(run_id)
    if found is None:
        raise HTTPException(404, f"run {run_id} does not exist")
    return run_out(*found, detail=True, store=store)


@router.post("/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: int, request: Request, store: StoreDep, queue: QueueDep) -> RunOut:
    """Cancel a queued or running run; a running one is stopped and its resources freed."""
    if store.get_run(run_id) is None:
        raise HTTPException(404, f"run {run_id} does not exist")
    cancelled = queue.cancel(run_id)
    if cancelled is None:
        raise HTTPException(409, f"run {run_id} has already ended")
    previous, attempt = cancelled
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if previous == RunStatus.RUNNING and dispatcher is not None:
        dispatcher.stop_attempt(run_id, attempt)
    return run_out(*store.get_run(run_id), detail=True, store=store)
