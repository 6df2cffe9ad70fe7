"""What workers report about their attempts: started, heartbeats, finished."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import Field

from api.deps import QueueDep, StoreDep
from api.routes.runs import RunIdPath, run_out
from api.schemas import MAX_DB_INT, AttemptFinished, AttemptStarted, Body, RunOut
from service.db import FailureKind, RunStatus

router = APIRouter(tags=["attempts"])

_OUTCOMES = {
    "succeeded": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED,
    "diverged": RunStatus.DIVERGED,
}


class WorkerStarted(AttemptStarted):
    """A started report with where the attempt runs in Ray, so it can be found and killed."""

    ray_node_id: str | None = Field(default=None, max_length=128)
    ray_worker_pid: int | None = Field(default=None, ge=1, le=MAX_DB_INT)


class Heartbeat(Body):
    """A lease renewal; the lease lasts three intervals."""

    attempt: int = Field(ge=1, le=MAX_DB_INT)
    interval_s: float = Field(gt=0, le=3600)


@router.post("/runs/{run_id}/started", status_code=204)
def attempt_started(run_id: RunIdPath, body: WorkerStarted, queue: QueueDep) -> None:
    """A worker reports that its attempt began (and from which epoch it resumed)."""
    recorded = queue.record_start(
        run_id, body.attempt, body.node, body.resumed_from_epoch,
        body.ray_node_id, body.ray_worker_pid,
    )  # fmt: skip
    if not recorded:
        raise HTTPException(409, f"run {run_id} attempt {body.attempt} is no longer current")


@router.post("/runs/{run_id}/heartbeat", status_code=204)
def attempt_heartbeat(run_id: RunIdPath, body: Heartbeat, queue: QueueDep) -> None:
    """Renew the lease of the run's current attempt; 409 tells a stale worker to stop."""
    if not queue.renew_lease(run_id, body.attempt, 3 * body.interval_s):
        raise HTTPException(409, f"run {run_id} attempt {body.attempt} is no longer current")


@router.post("/runs/{run_id}/finished", response_model=RunOut)
def attempt_finished(
    run_id: RunIdPath, body: AttemptFinished, store: StoreDep, queue: QueueDep
) -> RunOut:
    """A worker reports how its attempt ended; the retry policy of its failure kind applies.

    A stale attempt's report changes nothing (409).
    """
    if body.outcome == "succeeded":
        done = queue.finish(run_id, body.attempt, RunStatus.SUCCEEDED) or None
    else:
        kind = _failure_kind(body)
        reason = body.reason or f"{kind.value}: the worker gave no reason"
        done = queue.fail(run_id, body.attempt, kind, reason)
    if done is None:
        raise HTTPException(409, f"run {run_id} attempt {body.attempt} is no longer current")
    return run_out(*store.get_run(run_id))


def _failure_kind(body: AttemptFinished) -> FailureKind:
    if _OUTCOMES[body.outcome] == RunStatus.DIVERGED:
        return FailureKind.DIVERGED
    try:
        return FailureKind(body.failure_kind or FailureKind.USER_CODE.value)
    except ValueError:
        return FailureKind.USER_CODE
