"""Submissions, run reads and metrics in the results database.

Only the API process calls this module; the queue's state changes live in `service.queue`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from sqlalchemy import Table, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from loope.spec import ExperimentSpec
from service.db import (
    Artifact,
    Attempt,
    MetricPoint,
    MetricSummary,
    Run,
    RunStatus,
    Spec,
    Sweep,
    ValueKind,
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
        user_id: int | None = None,
        policy: ResubmitPolicy = "reuse",
        sweep: dict[str, Any] | None = None,
    ) -> Submitted:
        """Create runs for the (spec, seed) cells, all in one transaction.

        `reuse` returns the existing run of a cell that is queued, running or succeeded and
        creates one otherwise; `skip` leaves every existing cell alone; `force-new` always
        creates a run. Rows are written in bulk, so a sweep of thousands is one round trip
        per table.
        """
        with self.sessions.begin() as session:
            sweep_id = self._add_sweep(session, sweep, owner)
            specs = self._upsert_specs(session, requests, owner)
            hashes = [r.spec.spec_hash() for r in requests]
            existing = self._existing_runs(session, list(set(specs.values())))
            created_rows, reused, skipped = [], [], []
            for request, spec_hash in zip(requests, hashes, strict=True):
                spec_id = specs[spec_hash]
                previous = existing.get((spec_id, request.seed))
                if previous is not None and policy == "skip":
                    skipped.append(previous[0])
                    continue
                if previous is not None and policy == "reuse" and previous[1] not in _REDO:
                    reused.append(previous[0])
                    continue
                created_rows.append(_new_run(request, spec_id, sweep_id, priority, owner, user_id))
            created = _insert_returning_ids(session, Run, created_rows)
        if created:
            log.info(
                "queued %d runs (%d reused, %d skipped)", len(created), len(reused), len(skipped)
            )
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
        query = select(Spec.spec_hash, Spec.id).where(Spec.spec_hash.in_(wanted))
        ids = dict(session.execute(query).all())
        missing = [_spec_row(h, r, owner) for h, r in wanted.items() if h not in ids]
        if missing:
            # A concurrent submission may add the same spec: ignore it, then read both.
            session.execute(_insert_ignoring_duplicates(session, Spec.__table__), missing)
            ids = dict(session.execute(query).all())
        return ids

    def _existing_runs(
        self, session: Session, spec_ids: list[int]
    ) -> dict[tuple[int, int], tuple[int, RunStatus]]:
        """The latest run of each (spec, seed) cell: its id and status."""
        rows = session.execute(
            select(Run.spec_id, Run.seed, Run.id, Run.status)
            .where(Run.spec_id.in_(spec_ids))
            .order_by(Run.id)
        )
        return {(spec_id, seed): (run_id, status) for spec_id, seed, run_id, status in rows}

    def retry(self, run_id: int) -> bool:
        """Queue an ended, unsuccessful run again; its next attempt resumes from a checkpoint."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status.in_(_RETRYABLE))
                .values(
                    status=RunStatus.QUEUED,
                    failure_kind=None,
                    failure_reason=None,
                    finished_at=None,
                )
            )
        if result.rowcount == 1:
            log.info("run %d queued again by request", run_id)
        return result.rowcount == 1

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
        arch: str | None = None,
        dataset: str | None = None,
        sweep_id: int | None = None,
        user_id: int | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[tuple[Run, Spec]]:
        """Runs in id order after `after_id`, filtered by the given fields."""
        query = select(Run, Spec).join(Spec, Run.spec_id == Spec.id).where(Run.id > after_id)
        for column, value in (
            (Run.status, status),
            (Spec.pe, pe),
            (Spec.arch, arch),
            (Spec.dataset, dataset),
            (Run.sweep_id, sweep_id),
            (Run.user_id, user_id),
        ):
            if value is not None:
                query = query.where(column == value)
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

    def comparison_rows(
        self, sweep_id: int | None, prefixes: Sequence[str]
    ) -> tuple[list[RunRow], dict[int, dict[str, Any]], list[SummaryRow]]:
        """What a comparison needs, in three plain queries (no objects per row).

        Returns every run (id, spec id, seed, status), the canonical spec of each spec id,
        and the last value of each metric of succeeded runs whose key starts with a prefix.
        """
        runs_query = select(Run.id, Run.spec_id, Run.seed, Run.status)
        summary_query = (
            select(MetricSummary.run_id, MetricSummary.key, MetricSummary.last)
            .add_columns(MetricSummary.last_kind)
            .join(Run, Run.id == MetricSummary.run_id)
            .where(Run.status == RunStatus.SUCCEEDED)
            .where(or_(*(MetricSummary.key.startswith(p, autoescape=True) for p in prefixes)))
        )
        if sweep_id is not None:
            runs_query = runs_query.where(Run.sweep_id == sweep_id)
            summary_query = summary_query.where(Run.sweep_id == sweep_id)
        with self.sessions() as session:
            runs = [RunRow(*row) for row in session.execute(runs_query)]
            spec_ids = {run.spec_id for run in runs}
            spec_rows = session.execute(
                select(Spec.id, Spec.canonical).where(Spec.id.in_(spec_ids))
            )
            specs = {spec_id: canonical for spec_id, canonical in spec_rows}
            summaries = [SummaryRow(*row) for row in session.execute(summary_query)]
        return runs, specs, summaries

    # --- artifacts ---------------------------------------------------------------------

    def add_artifact(self, run_id: int, attempt: int, item: ArtifactIn) -> tuple[Artifact, bool]:
        """Record an artifact; the same (attempt, kind, uri) again returns the stored one."""
        with self.sessions.begin() as session:
            found = session.scalars(
                select(Artifact).where(
                    Artifact.run_id == run_id,
                    Artifact.attempt == attempt,
                    Artifact.kind == item.kind,
                    Artifact.uri == item.uri,
                )
            ).first()
            if found is not None:
                return found, False
            row = Artifact(run_id=run_id, attempt=attempt, **vars(item))
            session.add(row)
            session.flush()
            return row, True

    def artifacts(self, run_id: int) -> list[Artifact]:
        with self.sessions() as session:
            query = select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)
            return list(session.scalars(query))

    # --- metrics -----------------------------------------------------------------------

    def ingest(self, run_id: int, attempt: int, points: Sequence[PointIn]) -> int:
        """Store points of one attempt; a (key, step) already stored for it is ignored.

        Returns how many points were new. Summaries are updated in the same transaction.
        Only the steps the batch spans are looked up, so a long run's history costs nothing.
        """
        fresh = {(p.key, p.step): p for p in points}
        if not fresh:
            return 0
        steps = [step for _, step in fresh]
        with self.sessions.begin() as session:
            stored = session.execute(
                select(MetricPoint.key, MetricPoint.step).where(
                    MetricPoint.run_id == run_id,
                    MetricPoint.attempt == attempt,
                    MetricPoint.key.in_({key for key, _ in fresh}),
                    MetricPoint.step.between(min(steps), max(steps)),
                )
            )
            for seen in stored:
                fresh.pop(tuple(seen), None)
            rows = [_point_row(run_id, attempt, p) for p in fresh.values()]
            if rows:
                table = MetricPoint.__table__
                session.execute(_insert_ignoring_duplicates(session, table), rows)
                self._summarise(session, run_id, rows)
            return len(rows)

    def _summarise(self, session: Session, run_id: int, rows: list[dict[str, Any]]) -> None:
        """Fold new points into each key's summary and write them all in one statement."""
        by_key: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_key.setdefault(row["key"], []).append(row)
        table = MetricSummary.__table__
        current = {
            row.key: dict(row._mapping)
            for row in session.execute(
                select(table).where(table.c.run_id == run_id, table.c.key.in_(by_key))
            )
        }
        summaries = [
            _fold(current.get(key) or _empty_summary(run_id, key), key_rows)
            for key, key_rows in by_key.items()
        ]
        statement = _dialect_insert(session, table)
        changing = ("last", "last_kind", "last_step", "best", "best_step", "count")
        statement = statement.on_conflict_do_update(
            index_elements=["run_id", "key"],
            set_={name: statement.excluded[name] for name in changing},
        )
        session.execute(statement, summaries)

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
_RETRYABLE = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.DIVERGED)


@dataclass(frozen=True)
class ArtifactIn:
    kind: str
    uri: str
    size_bytes: int | None = None
    sha256: str | None = None


class RunRow(NamedTuple):
    id: int
    spec_id: int
    seed: int
    status: RunStatus


class SummaryRow(NamedTuple):
    run_id: int
    key: str
    last: float | None
    last_kind: ValueKind


def _dialect_insert(session: Session, table: Table) -> Any:
    """An INSERT with ON CONFLICT support (SQLite and PostgreSQL both have it)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _insert_ignoring_duplicates(session: Session, table: Table) -> Any:
    return _dialect_insert(session, table).on_conflict_do_nothing()


def _insert_returning_ids(
    session: Session, model: type[Run], rows: list[dict[str, Any]]
) -> list[int]:
    """Insert many rows in one batched statement; their new ids, in the order given."""
    if not rows:
        return []
    statement = insert(model).returning(model.id, sort_by_parameter_order=True)
    return list(session.scalars(statement, rows))


def _spec_row(spec_hash: str, request: RunRequest, owner: str | None) -> dict[str, Any]:
    spec = request.spec
    return {
        "spec_hash": spec_hash,
        "canonical": spec.canonical(),
        "body": request.body,
        "pe": spec.pe.name,
        "arch": spec.model.arch,
        "dataset": spec.dataset.name,
        "owner": owner,
        "created_at": utcnow(),
    }


def _new_run(
    request: RunRequest,
    spec_id: int,
    sweep_id: int | None,
    priority: int,
    owner: str | None,
    user_id: int | None,
) -> dict[str, Any]:
    return {
        "spec_id": spec_id,
        "sweep_id": sweep_id,
        "seed": request.seed,
        "status": RunStatus.QUEUED,
        "priority": priority,
        "gpus": request.spec.resources.gpus,
        "cpus": request.spec.resources.cpus,
        "memory_gb": request.spec.resources.memory_gb,
        "workers": request.spec.resources.workers,
        "owner": owner,
        "user_id": user_id,
        "created_at": utcnow(),
    }


def _point_row(run_id: int, attempt: int, point: PointIn) -> dict[str, Any]:
    value, kind = classify(point.value)
    return {
        "run_id": run_id,
        "attempt": attempt,
        "key": point.key,
        "step": point.step,
        "value": value,
        "kind": kind,
        "recorded_at": utcnow(),
    }


def _empty_summary(run_id: int, key: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "key": key,
        "last": None,
        "last_kind": ValueKind.NAN,
        "last_step": -1,
        "best": None,
        "best_step": None,
        "count": 0,
    }


def _fold(summary: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold new points into a summary: last by step, best among finite values."""
    out = dict(summary)
    lower = lower_is_better(out["key"])
    for row in rows:
        out["count"] += 1
        if row["step"] >= out["last_step"]:
            out["last"], out["last_kind"], out["last_step"] = row["value"], row["kind"], row["step"]
        value, best = row["value"], out["best"]
        if value is None:
            continue
        if best is None or (value < best if lower else value > best):
            out["best"], out["best_step"] = value, row["step"]
    return out
