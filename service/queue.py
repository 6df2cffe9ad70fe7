"""The run queue's state changes: claim, start, finish, requeue, cancel.

Every change is a compare-and-set update guarded by the run's status and attempt number,
so a late message from a dead attempt or a racing reaper changes nothing, and a run never
has two live attempts.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import FINAL_STATUSES, Attempt, Run, RunStatus, Spec, utcnow

log = logging.getLogger(__name__)


class RunQueue:
    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def queued(self, limit: int) -> list[Run]:
        """Queued runs by priority (high first), then age."""
        with self.sessions() as session:
            query = (
                select(Run)
                .where(Run.status == RunStatus.QUEUED)
                .order_by(Run.priority.desc(), Run.id)
                .limit(limit)
            )
            return list(session.scalars(query))

    def claim(self, run_id: int) -> tuple[Run, Spec] | None:
        """Move a queued run to RUNNING with a new attempt; None if someone else got it."""
        with self.sessions.begin() as session:
            claimed = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
                .values(status=RunStatus.RUNNING, attempt=Run.attempt + 1, started_at=utcnow())
                .returning(Run.attempt)
            ).scalar_one_or_none()
            if claimed is None:
                return None
            session.add(Attempt(run_id=run_id, number=claimed))
            run = session.get(Run, run_id)
            spec = session.get(Spec, run.spec_id)
            return run, spec

    def record_launch(self, run_id: int, attempt: int, ray_task_id: str) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(Attempt)
                .where(Attempt.run_id == run_id, Attempt.number == attempt)
                .values(ray_task_id=ray_task_id)
            )

    def record_start(
        self, run_id: int, attempt: int, node: str | None, resumed_from_epoch: int | None
    ) -> bool:
        with self.sessions.begin() as session:
            result = session.execute(
                update(Attempt)
                .where(Attempt.run_id == run_id, Attempt.number == attempt)
                .values(node=node, resumed_from_epoch=resumed_from_epoch)
            )
            return result.rowcount == 1

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
                )
            )
            if result.rowcount != 1:
                return False
            _end_attempt(session, run_id, attempt, reason or status.value.lower())
        log.info("run %d attempt %d ended %s", run_id, attempt, status.value)
        return True

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
                    failure_kind="cancelled",
                    failure_reason="cancelled by request",
                    finished_at=utcnow(),
                )
            )
            if result.rowcount != 1:
                return None
            if previous == RunStatus.RUNNING:
                _end_attempt(session, run_id, run.attempt, "cancelled")
            return previous, run.attempt

    def requeue(self, run_id: int, attempt: int, reason: str) -> bool:
        """Put a running run back in the queue after its attempt was lost."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.attempt == attempt, Run.status == RunStatus.RUNNING)
                .values(status=RunStatus.QUEUED, failure_kind="infra_lost", failure_reason=reason)
            )
            if result.rowcount != 1:
                return False
            _end_attempt(session, run_id, attempt, reason)
            return True

    def running(self) -> list[Run]:
        with self.sessions() as session:
            return list(session.scalars(select(Run).where(Run.status == RunStatus.RUNNING)))


def _end_attempt(session: Session, run_id: int, attempt: int, reason: str) -> None:
    session.execute(
        update(Attempt)
        .where(Attempt.run_id == run_id, Attempt.number == attempt)
        .values(exit_reason=reason, ended_at=utcnow())
    )
