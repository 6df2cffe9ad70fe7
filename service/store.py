"""Submissions, run reads and metrics in the results database.

Only the API process calls this module; the queue's state changes live in `service.queue`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from sqlalchemy import (
    Executable,
    Select,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
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
    SweepRun,
    ValueKind,
    Visibility,
    utcnow,
)
from service.metrics import classify, lower_is_better, restore

if TYPE_CHECKING:
    from service.auth import Principal

log = logging.getLogger(__name__)

ResubmitPolicy = Literal["reuse", "skip", "force-new"]


class PointIn(NamedTuple):
    """One metric point as reported: NaN, ±inf and −0.0 are ordinary floats here."""

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
        into_sweep: int | None = None,
        visibility: Visibility = "team",
        reader: Principal | None = None,
    ) -> Submitted:
        """Create runs for the (spec, seed) cells, all in one transaction.

        `reuse` returns the existing run of a cell that is queued, running or succeeded and
        creates one otherwise; `skip` leaves every existing cell alone; `force-new` always
        creates a run. With a `reader` (the submitter), only runs it may read count as
        existing, so another user's private run is neither revealed nor reused. A sweep's
        runs are all its cells: created, reused and skipped alike; `sweep` makes a new sweep
        of them, `into_sweep` adds them to an existing one (filling its missing seeds). Rows
        are written in bulk, so a sweep of thousands is one round trip per table.
        """
        if sweep is not None and into_sweep is not None:
            raise ValueError("a submission makes a new sweep or fills an existing one, not both")
        with self.sessions.begin() as session:
            sweep_id = into_sweep
            if sweep_id is None:
                sweep_id = self._add_sweep(session, sweep, owner)
            specs = self._upsert_specs(session, requests, owner)
            hashes = [r.spec.spec_hash() for r in requests]
            existing = self._existing_runs(session, list(set(specs.values())), reader)
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
                row = _new_run(request, spec_id, sweep_id, priority, owner, user_id)
                created_rows.append(row | {"visibility": visibility})
            created = _insert_returning_ids(session, Run, created_rows)
            if sweep_id is not None:
                _add_members(session, sweep_id, [*created, *reused, *skipped])
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
        self, session: Session, spec_ids: list[int], reader: Principal | None
    ) -> dict[tuple[int, int], tuple[int, RunStatus]]:
        """The latest run of each (spec, seed) cell that `reader` may read: its id and status."""
        query = select(Run.spec_id, Run.seed, Run.id, Run.status).where(Run.spec_id.in_(spec_ids))
        query = only_readable(query, reader)
        rows = session.execute(query.order_by(Run.id))
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

    def sweep_spec_hashes(self, sweep_id: int, reader: Principal | None = None) -> set[str]:
        """The spec hashes of the sweep's cells whose runs `reader` may read: empty when no
        sweep has that id or the reader may read none of its runs (someone's private sweep)."""
        query = (
            select(Spec.spec_hash)
            .join(Run, Run.spec_id == Spec.id)
            .join(SweepRun, SweepRun.run_id == Run.id)
            .where(SweepRun.sweep_id == sweep_id)
            .distinct()
        )
        with self.sessions() as session:
            return set(session.scalars(only_readable(query, reader)))

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
        reader: Principal | None = None,
    ) -> list[tuple[Run, Spec]]:
        """Runs in id order after `after_id`, filtered by the given fields (`sweep_id`: the
        sweep's cells, whichever submission created them); with a `reader`, only the runs
        that reader may read."""
        query = select(Run, Spec).join(Spec, Run.spec_id == Spec.id).where(Run.id > after_id)
        query = only_readable(query, reader)
        for column, value in (
            (Run.status, status),
            (Spec.pe, pe),
            (Spec.arch, arch),
            (Spec.dataset, dataset),
            (Run.user_id, user_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if sweep_id is not None:
            query = query.join(SweepRun, SweepRun.run_id == Run.id).where(
                SweepRun.sweep_id == sweep_id
            )
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

    def count_by_status(self, reader: Principal | None = None) -> dict[str, int]:
        """Runs per status; with a `reader`, only the runs that reader may read."""
        query = only_readable(select(Run.status, func.count()), reader).group_by(Run.status)
        with self.sessions() as session:
            return {status.value: count for status, count in session.execute(query)}

    def find_run(self, run_id: int) -> RunRef | None:
        """The run's id, owner, visibility, status and latest attempt, or None: for routes
        that only need those."""
        with self.sessions() as session:
            columns = (Run.user_id, Run.visibility, Run.status, Run.attempt)
            row = session.execute(select(*columns).where(Run.id == run_id)).first()
        return None if row is None else RunRef(run_id, *row)

    def comparison_rows(
        self, sweep_id: int | None, prefixes: Sequence[str], reader: Principal | None = None
    ) -> ComparisonRows:
        """What a comparison needs, read as plain driver tuples (no objects per row).

        Returns every run (of the sweep, if given), the canonical spec of each of their spec
        ids, and for each metric key starting with a prefix the last value of every
        succeeded run that has it. Values are read one key at a time from the covering index
        on (key, run_id, last, last_kind), finite ones straight into a dict; the rare NaN,
        ±inf and −0.0 are read apart and restored. With a `reader`, private runs it may not
        read are left out.
        """
        with self.sessions() as session:
            connection = session.connection()
            # Status comes as the stored name, which equals the RunStatus value.
            runs: list[RunRow] = _driver_rows(
                connection, _RUNS[sweep_id is not None], sweep_id=sweep_id
            )
            spec_rows = session.execute(
                select(Spec.id, Spec.canonical).where(Spec.id.in_({run[1] for run in runs}))
            )
            specs = {spec_id: canonical for spec_id, canonical in spec_rows}
            keys = [k for k in _metric_keys(connection) if k.startswith(tuple(prefixes))]
            values = {key: _last_values(connection, key, sweep_id) for key in keys}
            if reader is not None and not reader.reads_every_run:
                hidden = set(session.scalars(_private_of_others(reader.user_id)))
                runs = [run for run in runs if run[0] not in hidden]
                values = {key: _without(found, hidden) for key, found in values.items()}
        return ComparisonRows(runs, specs, values)

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

    def ingest(
        self, run_id: int, attempt: int, points: Sequence[PointIn | tuple[str, int, float]]
    ) -> int:
        """Store points of one attempt; a (key, step) already stored for it is ignored.

        Returns how many points this call wrote; only those are folded into the summaries,
        in the same transaction. The INSERT names the rows it wrote (ON CONFLICT DO NOTHING
        RETURNING), so two ingests of the same points at once never count a point twice: on
        PostgreSQL the second waits for the first's rows and then skips them. Rows go in
        (key, step) order, so racing writers lock them in one order and cannot deadlock.
        A (key, step) given twice in one batch keeps its last value.
        """
        fresh = {(key, step): value for key, step, value in points}
        if not fresh:
            return 0
        finite = ValueKind.FINITE
        rows = [
            (key, step, value, finite)
            if value != 0 and value - value == 0  # finite and not ±0.0: most points
            else (key, step, *classify(value))
            for (key, step), value in sorted(fresh.items())
        ]
        with self.sessions.begin() as session:
            written = _insert_points(session.connection(), run_id, attempt, rows)
            if written:
                self._summarise(session, run_id, written)
        return len(written)

    def _summarise(self, session: Session, run_id: int, rows: list[NewPoint]) -> None:
        """Fold the new points into each key's summary with one upsert per direction.

        The batch is folded here; the database merges that with the stored summary (later
        step wins the last value, the better finite value wins the best), so the stored
        summaries are never read back.
        """
        by_key: dict[str, list[NewPoint]] = {}
        for row in rows:
            by_key.setdefault(row[0], []).append(row)
        folded = [_fold(_empty_summary(run_id, key), key_rows) for key, key_rows in by_key.items()]
        dialect = session.get_bind().dialect
        for lower in (True, False):
            summaries = [s for s in folded if lower_is_better(s["key"]) == lower]
            if summaries:
                session.execute(_summary_upsert(dialect, lower), summaries)

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
_FINITE = ValueKind.FINITE.name


def _comparison_statements() -> tuple[dict[bool, Any], Executable, dict[bool, tuple[Any, Any]]]:
    """The comparison's queries, built once: runs, summary keys, and one key's values."""
    sweep = bindparam("sweep_id")
    every_run = select(Run.id, Run.spec_id, Run.seed, Run.status).order_by(Run.id)
    members = every_run.join(SweepRun, SweepRun.run_id == Run.id)
    runs = {False: every_run, True: members.where(SweepRun.sweep_id == sweep)}
    keys = text(
        "WITH RECURSIVE found(key) AS ("
        " SELECT MIN(key) FROM metric_summaries"
        " UNION ALL"
        " SELECT (SELECT MIN(s.key) FROM metric_summaries s WHERE s.key > found.key)"
        " FROM found WHERE found.key IS NOT NULL"
        ") SELECT key FROM found WHERE key IS NOT NULL"
    )
    summary = MetricSummary.__table__.c
    finite = select(summary.run_id, summary.last).where(
        summary.key == bindparam("key"), summary.last_kind == bindparam("finite")
    )
    special = select(summary.run_id, summary.last, summary.last_kind).where(
        summary.key == bindparam("key"), summary.last_kind != bindparam("finite")
    )
    in_sweep = tuple(
        query.join(SweepRun, SweepRun.run_id == summary.run_id).where(SweepRun.sweep_id == sweep)
        for query in (finite, special)
    )
    return runs, keys, {False: (finite, special), True: in_sweep}


_RUNS, _KEYS, _LAST_VALUES = _comparison_statements()


@dataclass(frozen=True)
class ArtifactIn:
    kind: str
    uri: str
    size_bytes: int | None = None
    sha256: str | None = None


class RunRow(NamedTuple):
    """A run as a comparison sees it; `status` is the stored name of its RunStatus."""

    id: int
    spec_id: int
    seed: int
    status: str


class RunRef(NamedTuple):
    id: int
    user_id: int | None
    visibility: str
    status: RunStatus
    attempt: int


def only_readable(query: Select, reader: Principal | None) -> Select:
    """`query` (over runs) kept to the runs `reader` may read: team runs and its own private
    ones; unchanged without a reader or for one who reads every run."""
    if reader is None or reader.reads_every_run:
        return query
    return query.where(or_(Run.visibility != "private", Run.user_id == reader.user_id))


def _private_of_others(user_id: int | None) -> Executable:
    """Ids of the private runs whose owner is not `user_id`."""
    query = select(Run.id).where(Run.visibility == "private")
    return query if user_id is None else query.where(Run.user_id.is_distinct_from(user_id))


def _without(values: dict[int, float], hidden: set[int]) -> dict[int, float]:
    return (
        {run_id: value for run_id, value in values.items() if run_id not in hidden}
        if hidden
        else values
    )


class ComparisonRows(NamedTuple):
    """Runs, their specs' canonical forms, and metric key -> run id -> last value."""

    runs: list[RunRow]
    specs: dict[int, dict[str, Any]]
    values: dict[str, dict[int, float]]


# A point about to be stored, (key, step, value, kind): its value split into the float the
# database keeps and its kind. Plain tuples, as thousands are made per batch.
NewPoint = tuple[str, int, float | None, ValueKind]


def _dialect_insert(session: Session, table: Table) -> Any:
    """An INSERT with ON CONFLICT support (SQLite and PostgreSQL both have it)."""
    return _insert_for(session.get_bind().dialect, table)


def _insert_for(dialect: Dialect, table: Table) -> Any:
    return (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(table)


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


def _add_members(session: Session, sweep_id: int, run_ids: Iterable[int]) -> None:
    """Make the runs cells of the sweep, each once: however often the submission named it,
    and whether or not an earlier fill of the sweep already made it one."""
    rows = [{"sweep_id": sweep_id, "run_id": run_id} for run_id in sorted(set(run_ids))]
    if rows:
        session.execute(_insert_ignoring_duplicates(session, SweepRun.__table__), rows)


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


_POINT_COLUMNS = ("run_id", "attempt", "key", "step", "value", "kind", "recorded_at")
# 7,000 parameters a statement: below SQLite's 32,766 and PostgreSQL's 65,535.
_POINTS_PER_STATEMENT = 1000
_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _insert_points(
    connection: Connection, run_id: int, attempt: int, rows: Sequence[NewPoint]
) -> list[NewPoint]:
    """Insert the points, skipping any (run, attempt, key, step) already stored; returns the
    rows this statement wrote, which are the only ones a summary may count.

    Each chunk is one multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING key, step,
    run on the driver's cursor (no SQLAlchemy row objects). SQLAlchemy would run each
    row's kind and time through the column types' converters; here they are converted once
    per batch with those same converters, so the stored text is the one the models write
    and read.

    NOTE: `recorded_at` is when the service stored the batch, the same for all its points.
    A reported point carries no time of its own (MetricPointIn is key, step, value), and
    the worker's reporter holds points for up to its flush interval and retries through
    API outages, so the time of receipt is the only time the service knows; a per-point
    time would need the reporter to send one.
    """
    dialect = connection.dialect
    table = MetricPoint.__table__
    kinds = {kind: _to_db(dialect, table.c.kind, kind) for kind in ValueKind}
    now = _to_db(dialect, table.c.recorded_at, utcnow())
    written: set[tuple[str, int]] = set()
    cursor = connection.connection.cursor()
    try:
        for start in range(0, len(rows), _POINTS_PER_STATEMENT):
            chunk = rows[start : start + _POINTS_PER_STATEMENT]
            parameters = [
                part
                for key, step, value, kind in chunk
                for part in (run_id, attempt, key, step, value, kinds[kind], now)
            ]
            cursor.execute(_point_insert(dialect, len(chunk)), parameters)
            written.update(cursor.fetchall())  # (key, step) tuples, straight from the driver
    finally:
        cursor.close()
    if len(written) == len(rows):
        return list(rows)
    return [row for row in rows if (row[0], row[1]) in written]


@functools.lru_cache(maxsize=64)
def _point_insert(dialect: Dialect, rows: int) -> str:
    """The driver SQL that inserts `rows` points and returns the (key, step) it wrote."""
    quote = dialect.identifier_preparer.quote
    mark = _MARKS[dialect.paramstyle]
    columns = ", ".join(map(quote, _POINT_COLUMNS))
    values = ", ".join(["(" + ", ".join([mark] * len(_POINT_COLUMNS)) + ")"] * rows)
    return (
        f"INSERT INTO {quote(MetricPoint.__tablename__)} ({columns}) VALUES {values}"
        f" ON CONFLICT DO NOTHING RETURNING {quote('key')}, {quote('step')}"
    )


@functools.cache
def _summary_upsert(dialect: Dialect, lower: bool) -> Any:
    """Insert a batch's summary of a key, or merge it into the stored one."""
    stored = MetricSummary.__table__.c
    statement = _insert_for(dialect, MetricSummary.__table__)
    new = statement.excluded
    newer = new.last_step >= stored.last_step
    better = new.best < stored.best if lower else new.best > stored.best
    takes_best = or_(stored.best.is_(None), and_(new.best.is_not(None), better))
    return statement.on_conflict_do_update(
        index_elements=["run_id", "key"],
        set_={
            "last": case((newer, new.last), else_=stored.last),
            "last_kind": case((newer, new.last_kind), else_=stored.last_kind),
            "last_step": case((newer, new.last_step), else_=stored.last_step),
            "best": case((takes_best, new.best), else_=stored.best),
            "best_step": case((takes_best, new.best_step), else_=stored.best_step),
            "count": stored.count + new.count,
        },
    )


def _to_db(dialect: Dialect, column: Any, value: Any) -> Any:
    """`value` as the column's type hands it to the driver."""
    convert = column.type.dialect_impl(dialect).bind_processor(dialect)
    return value if convert is None else convert(value)


def _driver_rows(connection: Connection, statement: Executable, **params: Any) -> list[Any]:
    """The rows of a query as the driver returns them: plain tuples, no per-row converters.

    Only for columns whose driver values are what the caller wants (numbers, text, enum
    names), and for parameters that need no conversion. The SQL is compiled once per
    statement and dialect.
    """
    dialect = connection.dialect
    found = _COMPILED.get((statement, dialect.name))
    if found is None:
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ()) if compiled.positional else None
        found = _COMPILED[(statement, dialect.name)] = (compiled.string, names)
    sql, names = found
    arguments = params if names is None else tuple(params[name] for name in names)
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, arguments)
        return cursor.fetchall()
    finally:
        cursor.close()


_COMPILED: dict[tuple[Executable, str], tuple[str, tuple[str, ...] | None]] = {}


def _metric_keys(connection: Connection) -> list[str]:
    """Every distinct summary key, by a loose scan of the (key, ...) index: one probe per key."""
    return [key for (key,) in _driver_rows(connection, _KEYS)]


def _last_values(connection: Connection, key: str, sweep_id: int | None) -> dict[int, float]:
    """Run id -> last value of `key`, for runs (of the sweep, if given)."""
    finite, special = _LAST_VALUES[sweep_id is not None]
    values: dict[int, float] = dict(
        _driver_rows(connection, finite, key=key, sweep_id=sweep_id, finite=_FINITE)
    )
    rows = _driver_rows(connection, special, key=key, sweep_id=sweep_id, finite=_FINITE)
    for run_id, last, kind in rows:
        values[run_id] = restore(last, ValueKind[kind])
    return values


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


def _fold(summary: dict[str, Any], rows: list[NewPoint]) -> dict[str, Any]:
    """Fold new points into a summary: last by step, best among finite values."""
    out = dict(summary)
    lower = lower_is_better(out["key"])
    for _, step, value, kind in rows:
        out["count"] += 1
        if step >= out["last_step"]:
            out["last"], out["last_kind"], out["last_step"] = value, kind, step
        best = out["best"]
        if value is None:
            continue
        if best is None or (value < best if lower else value > best):
            out["best"], out["best_step"] = value, step
    return out
