"""Artifacts of runs: checkpoints, plots and PE maps that attempts wrote to the store."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from api.deps import StoreDep, UserDep
from api.routes.runs import RunIdPath, check_readable, readable_run
from api.schemas import ArtifactIn, ArtifactOut
from service import store as store_module

router = APIRouter(tags=["artifacts"])


@router.post("/runs/{run_id}/artifacts", status_code=201, response_model=ArtifactOut)
def add_artifact(
    run_id: RunIdPath, body: ArtifactIn, store: StoreDep, user: UserDep, response: Response
) -> ArtifactOut:
    """Record an artifact of an attempt; recording the same one again changes nothing."""
    run, _ = readable_run(store, run_id, user)
    if user.role != "service" and not user.may_change(run.user_id):
        raise HTTPException(403, f"user {user.name!r} may not add artifacts to run {run_id}")
    item = store_module.ArtifactIn(body.kind, body.uri, body.size_bytes, body.sha256)
    row, created = store.add_artifact(run_id, body.attempt, item)
    if not created:
        response.status_code = 200
    return ArtifactOut.model_validate(row, from_attributes=True)


@router.get("/runs/{run_id}/artifacts", response_model=list[ArtifactOut])
def list_artifacts(run_id: RunIdPath, store: StoreDep, user: UserDep) -> list[ArtifactOut]:
    """Every artifact of a run, oldest first."""
    check_readable(store, run_id, user)
    return [ArtifactOut.model_validate(a, from_attributes=True) for a in store.artifacts(run_id)]
