"""Tables of the results database and the engine that serves them.

The same schema runs on SQLite (the embedded default) and PostgreSQL. All times are UTC.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RunStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DIVERGED = "DIVERGED"
    CANCELLED = "CANCELLED"


FINAL_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.DIVERGED,
    RunStatus.CANCELLED,
)


class FailureKind(enum.StrEnum):
    INFRA_LOST = "infra_lost"
    PREEMPTED = "preempted"
    USER_CODE = "user_code"
    OUT_OF_MEMORY = "out_of_memory"
    DIVERGED = "diverged"
    CANCELLED = "cancelled"


Visibility = Literal["team", "private"]
"""Who may read a run: the whole team, or only its owner and admins."""

VISIBILITIES: tuple[Visibility, ...] = ("team", "private")


class ValueKind(enum.StrEnum):
    """How a metric value is stored: SQLite drops the sign of −0.0, so it has its own kind."""

    FINITE = "finite"
    NEG_ZERO = "-0"
    NAN = "nan"
    POS_INF = "+inf"
    NEG_INF = "-inf"


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Spec(Base):
    __tablename__ = "specs"

    id: Mapped[int] = mapped_column(primary_key=True)
    spec_hash: Mapped[str] = mapped_column(String(64), unique=True)
    canonical: Mapped[dict[str, Any]]
    body: Mapped[dict[str, Any]]
    pe: Mapped[str] = mapped_column(String(64), index=True)
    arch: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    axes: Mapped[dict[str, Any]]
    seeds: Mapped[dict[str, Any]]
    owner: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Run(Base):
    """One seed of one spec, trained (and retried) until it ends.

    `sweep_id` is the sweep whose submission created the run, or None. A run belongs to
    every sweep listed for it in `sweep_runs`, which also holds the sweeps that reused or
    skipped it; "the runs of sweep N" always means that membership.
    """

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_queue", "status", "priority", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    spec_id: Mapped[int] = mapped_column(ForeignKey("specs.id"), index=True)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id"), index=True)
    seed: Mapped[int]
    status: Mapped[RunStatus] = mapped_column(Enum(RunStatus, native_enum=False, length=16))
    priority: Mapped[int] = mapped_column(default=0)
    gpus: Mapped[float] = mapped_column(Float, default=0.0)
    cpus: Mapped[float] = mapped_column(Float, default=1.0)
    memory_gb: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    workers: Mapped[int] = mapped_column(default=1, server_default="1")
    attempt: Mapped[int] = mapped_column(default=0)
    retries_used: Mapped[int] = mapped_column(default=0, server_default="0")
    max_retries: Mapped[int] = mapped_column(default=0, server_default="0")
    failure_kind: Mapped[str | None] = mapped_column(String(32))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(200))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    visibility: Mapped[str] = mapped_column(String(16), default="team", server_default="team")
    lease_expires_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class SweepRun(Base):
    """A run is a cell of a sweep: created, reused or skipped by that sweep's submission."""

    __tablename__ = "sweep_runs"
    # The primary key answers "runs of a sweep"; this index answers "sweeps of a run".
    __table_args__ = (Index("ix_sweep_runs_run_id", "run_id"),)

    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    number: Mapped[int]
    ray_task_id: Mapped[str | None] = mapped_column(String(128))
    ray_node_id: Mapped[str | None] = mapped_column(String(128))
    ray_worker_pid: Mapped[int | None]
    node: Mapped[str | None] = mapped_column(String(200))
    resumed_from_epoch: Mapped[int | None]
    exit_reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]


class MetricPoint(Base):
    __tablename__ = "metric_points"
    __table_args__ = (UniqueConstraint("run_id", "attempt", "key", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    attempt: Mapped[int]
    key: Mapped[str] = mapped_column(String(200))
    step: Mapped[int]
    value: Mapped[float | None] = mapped_column(Float)
    kind: Mapped[ValueKind] = mapped_column(Enum(ValueKind, native_enum=False, length=8))
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MetricSummary(Base):
    """Last and best value of one key of one run, kept in step with its points."""

    __tablename__ = "metric_summaries"
    # Comparisons read one key's values of all runs; this index answers that on its own.
    __table_args__ = (Index("ix_metric_summaries_key", "key", "run_id", "last", "last_kind"),)

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    last: Mapped[float | None] = mapped_column(Float)
    last_kind: Mapped[ValueKind] = mapped_column(Enum(ValueKind, native_enum=False, length=8))
    last_step: Mapped[int]
    best: Mapped[float | None] = mapped_column(Float)
    best_step: Mapped[int | None]
    count: Mapped[int] = mapped_column(default=0)


class Artifact(Base):
    """A file an attempt produced (checkpoint, plot, PE map), found at `uri`."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "attempt", "kind", "uri"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    attempt: Mapped[int]
    kind: Mapped[str] = mapped_column(String(32))
    uri: Mapped[str] = mapped_column(String(2000))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class User(Base):
    """A member of the team; `role` says what the user may do beyond its own runs."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token of a user; only its SHA-256 is kept, the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """A POST made with an `Idempotency-Key`, and the answer every repeat of it gets.

    `caller` is the SHA-256 of the request's Authorization header, so keys of different
    callers never meet; `request_hash` covers method, path, query and body. A row without
    `status_code` is a request still being answered.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("caller", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    caller: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    content_type: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    completed_at: Mapped[dt.datetime | None]


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout, and immediate write transactions."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker:
    """Sessions of a database brought to the newest schema (migrations run first)."""
    from service.migrations import upgrade

    upgrade(engine)
    return sessionmaker(engine, expire_on_commit=False)
