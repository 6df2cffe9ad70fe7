"""Listing sweeps: each with its axes, seeds and how many of its runs are in each state."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import func, select

from api.deps import StoreDep, UserDep, current_user
from api.schemas import MAX_DB_INT
from service.auth import Principal
from service.db import Run, Sweep, SweepRun
from service.store import only_readable

router = APIRouter(tags=["sweeps"], dependencies=[Depends(current_user)])


class SweepOut(BaseModel):
    """A sweep as submitted, and its runs counted by status (those the caller may read)."""

    id: int
    name: str | None
    owner: str | None
    axes: dict[str, Any]
    seeds: list[int]
    created_at: dt.datetime
    runs: dict[str, int]


class SweepPage(BaseModel):
    sweeps: list[SweepOut]
    next_cursor: int | None


@router.get("/sweeps", response_model=SweepPage)
def list_sweeps(
    store: StoreDep,
    user: UserDep,
    cursor: Annotated[
        int, Query(ge=0, le=MAX_DB_INT, description="last sweep id of the previous page")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SweepPage:
    """Sweeps in id order, those with a run the caller may read (another user's private
    sweep is not listed); pass `next_cursor` back as `cursor` for the next page."""
    readable = only_readable(
        select(SweepRun.run_id)
        .join(Run, Run.id == SweepRun.run_id)
        .where(SweepRun.sweep_id == Sweep.id),
        user,
    )
    with store.sessions() as session:
        query = select(Sweep).where(Sweep.id > cursor, readable.exists())
        sweeps = list(session.scalars(query.order_by(Sweep.id).limit(limit)))
        counts = _run_counts(session, [s.id for s in sweeps], user)
    page = [
        SweepOut(
            id=s.id,
            name=s.name,
            owner=s.owner,
            axes=s.axes,
            seeds=list(s.seeds["seeds"]),
            created_at=s.created_at,
            runs=counts.get(s.id, {}),
        )
        for s in sweeps
    ]
    return SweepPage(sweeps=page, next_cursor=page[-1].id if len(page) == limit else None)


def _run_counts(session: Any, sweep_ids: list[int], user: Principal) -> dict[int, dict[str, int]]:
    """Sweep id -> {status: runs}, over every cell of each sweep (runs it created, reused
    or skipped), counting only the runs `user` may read."""
    query = (
        select(SweepRun.sweep_id, Run.status, func.count())
        .join(Run, Run.id == SweepRun.run_id)
        .where(SweepRun.sweep_id.in_(sweep_ids))
        .group_by(SweepRun.sweep_id, Run.status)
    )
    query = only_readable(query, user)
    counts: dict[int, dict[str, int]] = {}
    for sweep_id, status, count in session.execute(query):
        counts.setdefault(sweep_id, {})[status.value] = count
    return counts
