"""What workers report about their attempts: started (and resumed from where), finished."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.deps import QueueDep, StoreDep
from api.routes.runs import run_out
from api.schemas import AttemptFinished, AttemptStarted, RunOut
from service.db import FailureKind, RunStatus

router = APIRouter(tags=["attempts"])

_OUTCOMES = {
    "succeeded": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED,
    "diverged": RunStatus.DIVERGED,
}


@router.post("/runs/{run_id}/started", status_code=204)
def attempt_started(run_id: int, body: AttemptStarted, queue: QueueDep) -> None:
    """A worker reports that its attempt began (and from which epoch it resumed)."""
    queue.record_start(run_id, body.attempt, body.node, body.resumed_from_epoch)


@router.post("/runs/{run_id}/finished", response_model=RunOut)
def attempt_finished(
    run_id: int, body: AttemptFinished, store: StoreDep, queue: QueueDep
) -> RunOut:
    """A worker reports how its attempt ended; a stale attempt's report changes nothing."""
    status = _OUTCOMES[body.outcome]
    kind = body.failure_kind
    if status == RunStatus.DIVERGED:
        kind = FailureKind.DIVERGED.value
    elif status == RunStatus.FAILED and kind is None:
        kind = FailureKind.USER_CODE.value
    if not queue.finish(run_id, body.attempt, status, kind, body.reason):
        raise HTTPException(409, f"run {run_id} attempt {body.attempt} is no longer current")
    return run_out(*store.get_run(run_id))
