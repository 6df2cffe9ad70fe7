"""The run queue's guarded state changes and the retry policy per failure kind."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from loope.spec import ExperimentSpec
from service.db import FailureKind, Run, RunStatus, make_engine, make_sessionmaker
from service.queue import INFRA_REQUEUE_CAP, RunQueue
from service.store import RunRequest, Store

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "digits"}}


@pytest.fixture
def queue(tmp_path: Path) -> RunQueue:
    return RunQueue(make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'q.db'}")))


def _submit(queue: RunQueue, body: dict = SPEC, priority: int = 0) -> int:
    request = RunRequest(ExperimentSpec.model_validate(body), body, 0)
    return Store(queue.sessions).submit([request], priority=priority, policy="force-new").created[0]


def _run(queue: RunQueue, run_id: int) -> Run:
    with queue.sessions() as session:
        return session.get(Run, run_id)


def test_order_and_requested_resources(queue: RunQueue) -> None:
    body = SPEC | {"resources": {"gpus": 1, "memory_gb": 3, "workers": 2}}
    first, second, urgent = _submit(queue, body), _submit(queue), _submit(queue, priority=5)
    waiting = queue.queued(limit=10)
    assert [w.run_id for w in waiting] == [urgent, first, second]
    assert waiting[1].resources.memory_gb == 3 and waiting[1].resources.workers == 2
    assert waiting[1].resources.gpus == 1


def test_a_stale_attempt_changes_nothing(queue: RunQueue) -> None:
    run_id = _submit(queue)
    run, _ = queue.claim(run_id, lease_s=60)
    assert queue.requeue(run_id, 1, FailureKind.INFRA_LOST, "lost")
    assert queue.claim(run_id, lease_s=60)[0].attempt == 2
    assert not queue.finish(run_id, 1, RunStatus.SUCCEEDED)
    assert not queue.renew_lease(run_id, 1, 15)
    assert not queue.record_start(run_id, 1, "node", None)
    assert queue.fail(run_id, 1, FailureKind.USER_CODE, "late") is None
    assert queue.claim(run_id, lease_s=60) is None  # never two live attempts
    assert _run(queue, run_id).status == RunStatus.RUNNING and queue.renew_lease(run_id, 2, 15)


def test_infra_losses_requeue_until_the_cap(queue: RunQueue) -> None:
    run_id = _submit(queue)
    for attempt in range(1, INFRA_REQUEUE_CAP + 1):
        queue.claim(run_id, lease_s=60)
        assert queue.fail(run_id, attempt, FailureKind.PREEMPTED, "node drained") == "QUEUED"
    queue.claim(run_id, lease_s=60)
    assert queue.fail(run_id, INFRA_REQUEUE_CAP + 1, FailureKind.INFRA_LOST, "gone") == "FAILED"
    run = _run(queue, run_id)
    assert run.failure_kind == "infra_lost" and "giving up" in run.failure_reason
    assert run.retries_used == 0


def test_user_code_is_retried_only_when_the_run_allows_it(queue: RunQueue) -> None:
    run_id = _submit(queue)
    with queue.sessions.begin() as session:
        session.execute(update(Run).where(Run.id == run_id).values(max_retries=1))
    queue.claim(run_id, lease_s=60)
    assert queue.fail(run_id, 1, FailureKind.USER_CODE, "user_code: boom") == "QUEUED"
    queue.claim(run_id, lease_s=60)
    assert queue.fail(run_id, 2, FailureKind.USER_CODE, "user_code: boom") == "FAILED"
    assert _run(queue, run_id).retries_used == 1


@pytest.mark.parametrize(
    ("kind", "status"),
    [(FailureKind.OUT_OF_MEMORY, "FAILED"), (FailureKind.DIVERGED, "DIVERGED")],
)
def test_oom_and_divergence_end_the_run(queue: RunQueue, kind: FailureKind, status: str) -> None:
    run_id = _submit(queue)
    queue.claim(run_id, lease_s=60)
    assert queue.fail(run_id, 1, kind, f"{kind.value}: why") == status
    assert _run(queue, run_id).failure_kind == kind.value


def test_an_expired_lease_is_found_and_a_renewed_one_is_not(queue: RunQueue) -> None:
    lapsed, renewed = _submit(queue), _submit(queue)
    queue.claim(lapsed, lease_s=-1)
    queue.claim(renewed, lease_s=-1)
    assert queue.renew_lease(renewed, 1, 30)
    assert [run.id for run in queue.expired()] == [lapsed]
