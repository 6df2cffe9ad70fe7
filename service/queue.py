"""The run queue's state changes: claim, lease, start, finish, requeue, cancel.

Every change is a compare-and-set update guarded by the run's status and attempt number,
so a late message from a dead attempt or a racing reaper changes nothing, and a run never
has two live attempts.

Retry policy per failure kind (the design's table):

| kind | what happens |
| --- | --- |
| infra_lost, preempted | back to the queue, resumes from its checkpoint; does not use the
  user's retry budget, but gives up after `INFRA_REQUEUE_CAP` losses |
| user_code | FAILED, unless the run still has retries (`max_retries`), then requeued |
| out_of_memory | FAILED; the reason names the memory the run asked for |
| diverged | DIVERGED (a result, not a crash) |
| cancelled | CANCELLED |
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from loope.spec import ResourceSpec
from service.db import (
    FINAL_STATUSES,
    Attempt,
    FailureKind,
    Run,
    RunStatus,
    Spec,
    utcnow,
)

log = logging.getLogger(__name__)

INFRA_REQUEUE_CAP = 5
"""Infrastructure losses a run may have before it ends FAILED (a hard cap, not a budget)."""

REQUEUED_KINDS = (FailureKind.INFRA_LOST, FailureKind.PREEMPTED)


@dataclass(frozen=True)
class Waiting:
    """A queued run as the dispatcher sees it: who goes first and what it asks for."""

    run_id: int
    priority: int
    resources: ResourceSpec


class RunQueue:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def queued(self, limit: int) -> list[Waiting]:
        """Queued runs by priority (high first), then age, with the resources they ask for."""
        with self.sessions() as session:
            query = (
                select(Run, Spec.body)
                .join(Spec, Run.spec_id == Spec.id)
                .where(Run.status == RunStatus.QUEUED)
                .order_by(Run.priority.desc(), Run.id)
                .limit(limit)
            )
            return [
                Waiting(run.id, run.priority, requested(run, body))
                for run, body in session.execute(query)
            ]

    def claim(self, run_id: int, lease_s: float) -> tuple[Run, Spec] | None:
        """Move a queued run to RUNNING with a new attempt and a lease; None if it moved on."""
        now = utcnow()
        with self.sessions.begin() as session:
            claimed = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
                .values(
                    status=RunStatus.RUNNING,
                    attempt=Run.attempt + 1,
                    started_at=now,
                    heartbeat_at=None,
                    lease_expires_at=now + dt.timedelta(seconds=lease_s),
                )
                .returning(Run.attempt)
            ).scalar_one_or_none()
            if claimed is None:
                return None
            session.add(Attempt(run_id=run_id, number=claimed))
            run = session.get(Run, run_id)
            spec = session.get(Spec, run.spec_id)
            return run, spec

    def record_launch(
        self, run_id: int, attempt: int, ray_task_id: str, ray_node_id: str | None
    ) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(Attempt)
                .where(Attempt.run_id == run_id, Attempt.number == attempt)
                .values(ray_task_id=ray_task_id, ray_node_id=ray_node_id)
            )

    def record_start(
        self,
        run_id: int,
        attempt: int,
        node: str | None,
        resumed_from_epoch: int | None,
        ray_node_id: str | None = None,
        ray_worker_pid: int | None = None,
    ) -> bool:
        """Note where an attempt runs and from which epoch it resumed; False if stale."""
        values: dict[str, Any] = {"node": node, "resumed_from_epoch": resumed_from_epoch}
        if ray_node_id is not None:
            values["ray_node_id"] = ray_node_id
        if ray_worker_pid is not None:
            values["ray_worker_pid"] = ray_worker_pid
        with self.sessions.begin() as session:
            if not _is_current(session, run_id, attempt):
                return False
            session.execute(
                update(Attempt)
                .where(Attempt.run_id == run_id, Attempt.number == attempt)
                .values(**values)
            )
            return True

    def renew_lease(self, run_id: int, attempt: int, lease_s: float) -> bool:
        """Extend the lease of the run's current attempt; False when the attempt is not current."""
        now = utcnow()
        with self.sessions.begin() as session:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.attempt == attempt, Run.status == RunStatus.RUNNING)
                .values(heartbeat_at=now, lease_expires_at=now + dt.timedelta(seconds=lease_s))
            )
            return result.rowcount == 1

    def expired(self, now: dt.datetime | None = None) -> list[Run]:
        """Running runs whose lease ran out: their attempt stopped renewing it."""
        with self.sessions() as session:
            query = select(Run).where(
                Run.status == RunStatus.RUNNING, Run.lease_expires_at < (now or utcnow())
            )
            return list(session.scalars(query))

    def finish(
        self,
        run_id: int,
        attempt: int,
        status: RunStatus,
        failure_kind: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """End the run's current attempt; False when the run moved on (a stale report)."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.attempt == attempt, Run.status == RunStatus.RUNNING)
                .values(
                    status=status,
                    failure_kind=failure_kind,
                    failure_reason=reason,
                    finished_at=utcnow(),
                    lease_expires_at=None,
                )
            )
            if result.rowcount != 1:
                return False
            _end_attempt(session, run_id, attempt, reason or status.value.lower())
        log.info("run %d attempt %d ended %s", run_id, attempt, status.value)
        return True

    def fail(self, run_id: int, attempt: int, kind: FailureKind, reason: str) -> RunStatus | None:
        """Apply the retry policy of `kind` to the run's current attempt.

        Returns the run's new status (QUEUED when it goes round again), or None when the
        attempt was no longer current.
        """
        with self.sessions() as session:
            run = session.get(Run, run_id)
            if run is None or run.status != RunStatus.RUNNING or run.attempt != attempt:
                return None
            infra_losses = run.attempt - 1 - run.retries_used
            retry_left = run.retries_used < run.max_retries
        if kind in REQUEUED_KINDS and infra_losses < INFRA_REQUEUE_CAP:
            return RunStatus.QUEUED if self.requeue(run_id, attempt, kind, reason) else None
        if kind == FailureKind.USER_CODE and retry_left:
            requeued = self.requeue(run_id, attempt, kind, reason, use_retry=True)
            return RunStatus.QUEUED if requeued else None
        if kind in REQUEUED_KINDS:
            reason = f"{kind.value}: lost {INFRA_REQUEUE_CAP + 1} times, giving up; last: {reason}"
        status = RunStatus.DIVERGED if kind == FailureKind.DIVERGED else RunStatus.FAILED
        return status if self.finish(run_id, attempt, status, kind.value, reason) else None

    def cancel(self, run_id: int) -> tuple[RunStatus, int] | None:
        """Cancel a run that has not ended; returns its previous status and attempt."""
        with self.sessions.begin() as session:
            run = session.get(Run, run_id)
            if run is None or run.status in FINAL_STATUSES:
                return None
            previous = run.status
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == previous, Run.attempt == run.attempt)
                .values(
                    status=RunStatus.CANCELLED,
                    failure_kind=FailureKind.CANCELLED.value,
                    failure_reason="cancelled: stopped by request",
                    finished_at=utcnow(),
                    lease_expires_at=None,
                )
            )
            if result.rowcount != 1:
                return None
            if previous == RunStatus.RUNNING:
                _end_attempt(session, run_id, run.attempt, "cancelled")
            return previous, run.attempt

    def requeue(
        self,
        run_id: int,
        attempt: int,
        kind: FailureKind,
        reason: str,
        *,
        use_retry: bool = False,
    ) -> bool:
        """Put a running run back in the queue; its next attempt resumes from the checkpoint."""
        values: dict[str, Any] = {
            "status": RunStatus.QUEUED,
            "failure_kind": kind.value,
            "failure_reason": reason,
            "lease_expires_at": None,
        }
        if use_retry:
            values["retries_used"] = Run.retries_used + 1
        with self.sessions.begin() as session:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.attempt == attempt, Run.status == RunStatus.RUNNING)
                .values(**values)
            )
            if result.rowcount != 1:
                return False
            _end_attempt(session, run_id, attempt, reason)
        log.warning("requeued run %d after attempt %d: %s", run_id, attempt, reason[:200])
        return True

    def running(self) -> list[Run]:
        with self.sessions() as session:
            return list(session.scalars(select(Run).where(Run.status == RunStatus.RUNNING)))

    def attempt(self, run_id: int, number: int) -> Attempt | None:
        with self.sessions() as session:
            query = select(Attempt).where(Attempt.run_id == run_id, Attempt.number == number)
            return session.scalars(query).first()


def requested(run: Run, body: dict[str, Any]) -> ResourceSpec:
    """What the run asks for: GPUs and CPUs from the run; memory and workers from the run
    when set there, otherwise from the submitted spec's `resources`."""
    submitted = body.get("resources") or {}
    memory_gb = run.memory_gb or float(submitted.get("memory_gb", 0))
    workers = run.workers if (run.workers or 1) > 1 else int(submitted.get("workers", 1))
    return ResourceSpec(gpus=run.gpus, cpus=run.cpus, memory_gb=memory_gb, workers=workers)


def _is_current(session: Session, run_id: int, attempt: int) -> bool:
    run = session.get(Run, run_id)
    return run is not None and run.status == RunStatus.RUNNING and run.attempt == attempt


def _end_attempt(session: Session, run_id: int, attempt: int, reason: str) -> None:
    session.execute(
        update(Attempt)
        .where(Attempt.run_id == run_id, Attempt.number == attempt)
        .values(exit_reason=reason, ended_at=utcnow())
    )
