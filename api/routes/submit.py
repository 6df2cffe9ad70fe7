"""Submitting specs and sweeps."""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, Request

from api.deps import StoreDep, UserDep
from api.schemas import MAX_SWEEP_CELLS, Submission, SubmitSpec, SubmitSweep
from service.auth import Principal
from service.store import RunRequest, Store
from service.sweeps import expand, validate_spec

router = APIRouter(tags=["submit"])


@router.post("/specs", status_code=201, response_model=Submission)
def submit_spec(body: SubmitSpec, request: Request, store: StoreDep, user: UserDep) -> Submission:
    """Submit one spec, run once per seed; the caller owns the new runs. With `sweep_id`,
    the runs fill that sweep's cell of the spec (the dashboard's "fill missing")."""
    spec = validate_spec(body.spec)
    if body.sweep_id is not None:
        _check_cell_of(store, body.sweep_id, spec.spec_hash(), user)
    requests = [RunRequest(spec, body.spec, seed) for seed in body.seeds]
    done = store.submit(
        requests, priority=body.priority, policy=body.policy, owner=user.name,
        user_id=user.user_id, visibility=body.visibility, reader=user, into_sweep=body.sweep_id,
    )  # fmt: skip
    _wake(request)
    return Submission(**vars(done), policy=body.policy)


@router.post("/sweeps", status_code=201, response_model=Submission)
def submit_sweep(body: SubmitSweep, request: Request, store: StoreDep, user: UserDep) -> Submission:
    """Submit a grid of specs × seeds; resubmitting fills only the missing cells."""
    cells = math.prod(len(values) for values in body.axes.values()) * len(body.seeds)
    if cells > MAX_SWEEP_CELLS:
        raise HTTPException(
            413, f"sweep has {cells} runs; the limit is {MAX_SWEEP_CELLS} (MAX_SWEEP_CELLS)"
        )
    requests = expand(body.base, body.axes, body.seeds)
    sweep = {"name": body.name, "axes": body.axes, "seeds": body.seeds}
    done = store.submit(
        requests, priority=body.priority, policy=body.policy, sweep=sweep, owner=user.name,
        user_id=user.user_id, visibility=body.visibility, reader=user,
    )  # fmt: skip
    _wake(request)
    return Submission(**vars(done), policy=body.policy)


def _check_cell_of(store: Store, sweep_id: int, spec_hash: str, user: Principal) -> None:
    """Refuse to fill a sweep the caller cannot see (404, as for one that does not exist), or
    with a spec that is none of its cells (a fill adds seeds to the sweep's cells; new cells
    come from resubmitting the sweep)."""
    cells = store.sweep_spec_hashes(sweep_id, user)
    if not cells:
        raise HTTPException(404, f"sweep_id: no sweep {sweep_id}")
    if spec_hash not in cells:
        raise HTTPException(
            422,
            f"sweep_id: the spec (hash {spec_hash[:12]}) is not one of sweep {sweep_id}'s "
            f"{len(cells)} cells; resubmit the sweep with a widened axis to add a cell",
        )


def _wake(request: Request) -> None:
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.wake()
