"""Submissions, run reads and metrics in the results database.

Only the API process calls this module; the queue's state changes live in `service.queue`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from loope.spec import ExperimentSpec
from service.db import (
    Attempt,
    MetricPoint,
    MetricSummary,
    Run,
    RunStatus,
    Spec,
    Sweep,
    utcnow,
)
from service.metrics import classify, lower_is_better, restore

log = logging.getLogger(__name__)

ResubmitPolicy = Literal["reuse", "skip", "force-new"]


@dataclass(frozen=True)
class PointIn:
    key: str
    step: int
    value: float


@dataclass(frozen=True)
class RunRequest:
    """One cell of a submission: a validated spec and a seed."""

    spec: ExperimentSpec
    body: dict[str, Any]
    seed: int


@dataclass(frozen=True)
class Submitted:
    """What a submission did: new runs, and existing runs it reused or skipped."""

    created: list[int]
    reused: list[int]
    skipped: list[int]
    sweep_id: int | None = None


class Store:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    # --- submission ------------------------------------------------------------------

    def submit(
        self,
        requests: Sequence[RunRequest],
        *,
        priority: int = 0,
        owner: str | None = None,
        policy: ResubmitPolicy = "reuse",
        sweep: dict[str, Any] | None = None,
    ) -> Submitted:
        """Create runs for the (spec, seed) cells, all in one transaction.

        `reuse` returns the existing run of a cell that is queued, running or succeeded and
        creates one otherwise; `skip` leaves every existing cell alone; `force-new` always
        creates a run.
        """
        created, reused, skipped = [], [], []
        with self.sessions.begin() as session:
            sweep_id = self._add_sweep(session, sweep, owner)
            specs = self._upsert_specs(session, requests, owner)
            existing = self._existing_runs(session, [specs[r.spec.spec_hash()] for r in requests])
            for request in requests:
                spec_id = specs[request.spec.spec_hash()]
                previous = existing.get((spec_id, request.seed))
                if previous is not None and policy == "skip":
                    skipped.append(previous.id)
                    continue
                if previous is not None and policy == "reuse" and previous.status not in _REDO:
                    reused.append(previous.id)
                    continue
                run = _new_run(request, spec_id, sweep_id, priority, owner)
                session.add(run)
                session.flush()
                created.append(run.id)
        return Submitted(created, reused, skipped, sweep_id)

    def _add_sweep(
        self, session: Session, sweep: dict[str, Any] | None, owner: str | None
    ) -> int | None:
        if sweep is None:
            return None
        row = Sweep(name=sweep.get("name"), axes=sweep["axes"], seeds={"seeds": sweep["seeds"]})
        row.owner = owner
        session.add(row)
        session.flush()
        return row.id

    def _upsert_specs(
        self, session: Session, requests: Iterable[RunRequest], owner: str | None
    ) -> dict[str, int]:
        wanted = {r.spec.spec_hash(): r for r in requests}
        rows = session.execute(select(Spec.spec_hash, Spec.id).where(Spec.spec_hash.in_(wanted)))
        ids = dict(rows.all())
        for spec_hash, request in wanted.items():
            if spec_hash in ids:
                continue
            spec = request.spec
            row = Spec(
                spec_hash=spec_hash,
                canonical=spec.canonical(),
                body=request.body,
                pe=spec.pe.name,
                arch=spec.model.arch,
                dataset=spec.dataset.name,
                owner=owner,
            )
            session.add(row)
            session.flush()
            ids[spec_hash] = row.id
        return ids

    def _existing_runs(self, session: Session, spec_ids: list[int]) -> dict[tuple[int, int], Run]:
        rows = session.scalars(select(Run).where(Run.spec_id.in_(spec_ids)).order_by(Run.id))
        return {(run.spec_id, run.seed): run for run in rows}

    # --- reading runs ----------------------------------------------------------------

    def get_run(self, run_id: int) -> tuple[Run, Spec] | None:
        with self.sessions() as session:
            row = session.execute(
                select(Run, Spec).join(Spec, Run.spec_id == Spec.id).where(Run.id == run_id)
            ).first()
            return None if row is None else (row[0], row[1])

    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        pe: str | None = None,
        sweep_id: int | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[tuple[Run, Spec]]:
        query = select(Run, Spec).join(Spec, Run.spec_id == Spec.id).where(Run.id > after_id)
        if status is not None:
            query = query.where(Run.status == status)
        if pe is not None:
            query = query.where(Spec.pe == pe)
        if sweep_id is not None:
            query = query.where(Run.sweep_id == sweep_id)
        with self.sessions() as session:
            rows = session.execute(query.order_by(Run.id).limit(limit)).all()
            return [(run, spec) for run, spec in rows]

    def attempts(self, run_id: int) -> list[Attempt]:
        with self.sessions() as session:
            query = select(Attempt).where(Attempt.run_id == run_id).order_by(Attempt.number)
            return list(session.scalars(query))

    def summaries(self, run_ids: Sequence[int]) -> dict[int, dict[str, MetricSummary]]:
        out: dict[int, dict[str, MetricSummary]] = {run_id: {} for run_id in run_ids}
        with self.sessions() as session:
            query = select(MetricSummary).where(MetricSummary.run_id.in_(run_ids))
            for summary in session.scalars(query):
                out[summary.run_id][summary.key] = summary
        return out

    def count_by_status(self) -> dict[str, int]:
        with self.sessions() as session:
            rows = session.execute(select(Run.status, func.count()).group_by(Run.status))
            return {status.value: count for status, count in rows}

    # --- metrics -----------------------------------------------------------------------

    def ingest(self, run_id: int, attempt: int, points: Sequence[PointIn]) -> int:
        """Store points of one attempt; a (key, step) already stored for it is ignored.

        Returns how many points were new. Summaries are updated in the same transaction.
        """
        with self.sessions.begin() as session:
            keys = {p.key for p in points}
            stored = session.execute(
                select(MetricPoint.key, MetricPoint.step).where(
                    MetricPoint.run_id == run_id,
                    MetricPoint.attempt == attempt,
                    MetricPoint.key.in_(keys),
                )
            )
            seen = set(stored.all())
            rows = []
            for point in points:
                if (point.key, point.step) in seen:
                    continue
                seen.add((point.key, point.step))
                value, kind = classify(point.value)
                rows.append(
                    {
                        "run_id": run_id,
                        "attempt": attempt,
                        "key": point.key,
                        "step": point.step,
                        "value": value,
                        "kind": kind,
                        "recorded_at": utcnow(),
                    }
                )
            if rows:
                session.execute(MetricPoint.__table__.insert(), rows)
                self._summarise(session, run_id, rows)
            return len(rows)

    def _summarise(self, session: Session, run_id: int, rows: list[dict[str, Any]]) -> None:
        by_key: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_key.setdefault(row["key"], []).append(row)
        current = {
            s.key: s
            for s in session.scalars(
                select(MetricSummary).where(
                    MetricSummary.run_id == run_id, MetricSummary.key.in_(by_key)
                )
            )
        }
        for key, key_rows in by_key.items():
            summary = current.get(key)
            if summary is None:
                first = key_rows[0]
                summary = MetricSummary(
                    run_id=run_id,
                    key=key,
                    last=first["value"],
                    last_kind=first["kind"],
                    last_step=first["step"],
                    best=None,
                    best_step=None,
                    count=0,
                )
                session.add(summary)
            _fold(summary, key_rows)

    def series(self, run_id: int, key: str, max_points: int = 1000) -> list[tuple[int, float]]:
        """The points of `key`; a later attempt's point supersedes an earlier one's at a step.

        Long series are downsampled to at most `max_points` by keeping every k-th point
        (and always the last).
        """
        with self.sessions() as session:
            rows = session.execute(
                select(MetricPoint.step, MetricPoint.value, MetricPoint.kind)
                .where(MetricPoint.run_id == run_id, MetricPoint.key == key)
                .order_by(MetricPoint.step, MetricPoint.attempt)
            ).all()
        latest = {step: restore(value, kind) for step, value, kind in rows}
        points = sorted(latest.items())
        if len(points) <= max_points:
            return points
        stride = -(-len(points) // max_points)
        kept = points[::stride]
        return kept if kept[-1] == points[-1] else [*kept[:-1], points[-1]]

    def metric_keys(self, run_id: int) -> list[str]:
        with self.sessions() as session:
            query = select(MetricSummary.key).where(MetricSummary.run_id == run_id)
            return sorted(session.scalars(query))


_REDO = (RunStatus.FAILED, RunStatus.CANCELLED)


def _new_run(
    request: RunRequest, spec_id: int, sweep_id: int | None, priority: int, owner: str | None
) -> Run:
    return Run(
        spec_id=spec_id,
        sweep_id=sweep_id,
        seed=request.seed,
        status=RunStatus.QUEUED,
        priority=priority,
        gpus=request.spec.resources.gpus,
        cpus=request.spec.resources.cpus,
        owner=owner,
    )


def _fold(summary: MetricSummary, rows: list[dict[str, Any]]) -> None:
    """Fold new points into a summary: last by step, best among finite values."""
    lower = lower_is_better(summary.key)
    for row in rows:
        summary.count += 1
        if row["step"] >= summary.last_step:
            summary.last, summary.last_kind, summary.last_step = (
                row["value"],
                row["kind"],
                row["step"],
            )
        value = row["value"]
        if value is None:
            continue
        better = summary.best is None or (value < summary.best if lower else value > summary.best)
        if better:
            summary.best, summary.best_step = value, row["step"]
