"""Reading, cancelling and reporting on runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request

from api.deps import QueueDep, StoreDep, UserDep
from api.schemas import (
    MAX_DB_INT,
    AttemptOut,
    JsonNumber,
    RunOut,
    RunPage,
)
from service.auth import Principal
from service.db import Run, RunStatus, Spec
from service.metrics import restore, to_json
from service.store import Store

router = APIRouter(tags=["runs"])

RunIdPath = Annotated[int, Path(ge=1, le=MAX_DB_INT, description="the run's id")]
Name = Annotated[str | None, Query(max_length=64)]


def missing(run_id: int) -> HTTPException:
    """The 404 of a run that does not exist, or that the caller may not read: the two are
    answered alike, so a private run's existence does not leak."""
    return HTTPException(404, f"run {run_id} does not exist")


def readable_run(store: Store, run_id: int, user: Principal) -> tuple[Run, Spec]:
    """The run and its spec, or 404 naming the id when there is none that `user` may read."""
    found = store.get_run(run_id)
    if found is None or not user.may_read(found[0].user_id, found[0].visibility):
        raise missing(run_id)
    return found


def check_readable(store: Store, run_id: int, user: Principal) -> None:
    """404 unless the run exists and `user` may read it (reads only the run's owner)."""
    found = store.find_run(run_id)
    if found is None or not user.may_read(found.user_id, found.visibility):
        raise missing(run_id)


def changeable_run(store: Store, run_id: int, user: Principal, action: str) -> tuple[Run, Spec]:
    """The run, if `user` owns it or is an admin; 403 otherwise (404 if it is unreadable)."""
    run, spec = readable_run(store, run_id, user)
    if not user.may_change(run.user_id):
        raise HTTPException(
            403, f"only the owner of run {run_id} or an admin may {action} it, not {user.name!r}"
        )
    return run, spec


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
        owner=run.owner,
        visibility=run.visibility,
        failure_kind=run.failure_kind,
        failure_reason=run.failure_reason,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )
    if detail and store is not None:
        out.spec = spec.canonical
        out.resources = {
            "gpus": run.gpus, "cpus": run.cpus, "memory_gb": run.memory_gb, "workers": run.workers
        }  # fmt: skip
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
    user: UserDep,
    status: RunStatus | None = None,
    pe: Name = None,
    arch: Name = None,
    dataset: Name = None,
    sweep_id: Annotated[int | None, Query(ge=1, le=MAX_DB_INT)] = None,
    mine: Annotated[bool, Query(description="only the caller's runs")] = False,
    cursor: Annotated[
        int, Query(ge=0, le=MAX_DB_INT, description="last run id of the previous page")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RunPage:
    """Runs the caller may read in id order, filtered; pass `next_cursor` back as `cursor`
    for the next page."""
    rows = store.list_runs(
        status=status, pe=pe, arch=arch, dataset=dataset, sweep_id=sweep_id,
        user_id=user.user_id if mine else None, after_id=cursor, limit=limit, reader=user,
    )  # fmt: skip
    runs = [run_out(run, spec) for run, spec in rows]
    return RunPage(runs=runs, next_cursor=runs[-1].id if len(runs) == limit else None)


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: RunIdPath, store: StoreDep, user: UserDep) -> RunOut:
    """One run with its spec, attempts and the last value of every metric; a private run
    of another user is answered 404, as if it did not exist."""
    return run_out(*readable_run(store, run_id, user), detail=True, store=store)


@router.post("/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(
    run_id: RunIdPath, request: Request, store: StoreDep, queue: QueueDep, user: UserDep
) -> RunOut:
    """Cancel a queued or running run (owner or admin); a running one is stopped."""
    changeable_run(store, run_id, user, "cancel")
    cancelled = queue.cancel(run_id)
    if cancelled is None:
        raise HTTPException(409, f"run {run_id} has already ended")
    previous, attempt = cancelled
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if previous == RunStatus.RUNNING and dispatcher is not None:
        dispatcher.stop_attempt(run_id, attempt)
    return run_out(*store.get_run(run_id), detail=True, store=store)


@router.post("/runs/{run_id}/retry", response_model=RunOut)
def retry_run(run_id: RunIdPath, request: Request, store: StoreDep, user: UserDep) -> RunOut:
    """Queue a failed, diverged or cancelled run again (owner or admin)."""
    run, _ = changeable_run(store, run_id, user, "retry")
    if not store.retry(run_id):
        raise HTTPException(
            409, f"run {run_id} is {run.status.value}; only ended, unsuccessful runs are retried"
        )
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.wake()
    return run_out(*store.get_run(run_id), detail=True, store=store)
