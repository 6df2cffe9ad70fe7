"""Faults that need no Ray: racing claimers, 32 concurrent metric writers on SQLite, and an
API that is away for 30 s while a worker reports. Each ends with every point stored once.

(Killing workers and the API mid-run on a real Ray is in tests/test_end_to_end.py.)
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import ThreadServer
from sqlalchemy import func, select

from loope.spec import ExperimentSpec
from service.db import Attempt, MetricPoint, Run, RunStatus, make_engine, make_sessionmaker
from service.queue import RunQueue
from service.settings import Settings
from service.store import RunRequest, Store
from workers.reporter import ApiClient, MetricReporter

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}


def _queued_runs(database_url: str, count: int) -> list[int]:
    store = Store(make_sessionmaker(make_engine(database_url)))
    spec = ExperimentSpec.model_validate(SPEC)
    done = store.submit([RunRequest(spec, SPEC, seed) for seed in range(count)])
    return done.created


@pytest.mark.timeout(180)
def test_two_dispatchers_never_claim_the_same_run(database_url: str) -> None:
    """Two claimers with their own engines race over the same queued runs in mixed order."""
    run_ids = _queued_runs(database_url, 40)
    start = threading.Barrier(2)

    def claimer(seed: int) -> list[int]:
        queue = RunQueue(make_sessionmaker(make_engine(database_url)))
        order = run_ids[:]
        random.Random(seed).shuffle(order)
        start.wait()
        return [run_id for run_id in order if queue.claim(run_id, lease_s=60) is not None]

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(claimer, (1, 2))
    assert not set(first) & set(second), "a run was started twice"
    assert sorted(first + second) == run_ids
    sessions = make_sessionmaker(make_engine(database_url))
    with sessions() as session:
        assert session.scalar(select(func.count(Attempt.id))) == len(run_ids)
        statuses = set(session.scalars(select(Run.status)))
        assert statuses == {RunStatus.RUNNING}
        assert set(session.scalars(select(Run.attempt))) == {1}


WRITERS = 32
BATCHES = 10
POINTS_PER_BATCH = 50


@pytest.mark.timeout(300)
def test_32_concurrent_writers_on_sqlite_store_every_point_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with ThreadServer(settings, dispatch=False) as server:
        base = f"{server.url}/api/v1"
        with httpx.Client(base_url=base, timeout=60) as api:
            seeds = list(range(WRITERS))
            run_ids = api.post("/specs", json={"spec": SPEC, "seeds": seeds}).json()["created"]
        barrier = threading.Barrier(WRITERS)

        def writer(run_id: int) -> list[int]:
            statuses = []
            with httpx.Client(base_url=base, timeout=120) as client:
                barrier.wait()
                for batch in range(BATCHES):
                    steps = range(batch * POINTS_PER_BATCH, (batch + 1) * POINTS_PER_BATCH)
                    points = [{"key": "loss", "step": s, "value": s / 7} for s in steps]
                    body = {"attempt": 1, "points": points}
                    for _ in range(2):  # every batch twice, as a retrying worker would
                        statuses.append(client.post(f"/runs/{run_id}/metrics", json=body))
            return [r.status_code for r in statuses]

        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            answers = [code for codes in pool.map(writer, run_ids) for code in codes]
    assert set(answers) == {200}
    engine = make_engine(settings.resolved_database_url())
    with engine.connect() as connection:
        per_run = dict(
            connection.execute(
                select(MetricPoint.run_id, func.count()).group_by(MetricPoint.run_id)
            ).all()
        )
    engine.dispose()
    assert per_run == {run_id: BATCHES * POINTS_PER_BATCH for run_id in run_ids}


OUTAGE_S = 30.0


@pytest.mark.timeout(240)
def test_a_worker_keeps_its_points_while_the_api_is_away_30_s(tmp_path: Path) -> None:
    """The reporter's API is down when the worker reports; it comes up 30 s later."""
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    [run_id] = _queued_runs(settings.resolved_database_url(), 1)
    server = ThreadServer(settings, dispatch=False)  # its port is chosen, nothing listens yet
    reporter = MetricReporter(ApiClient(server.url, patience_s=120), run_id, attempt=1)
    sent = threading.Event()

    def train() -> None:
        for step in range(1, 6):
            reporter(step, {"train/loss": 1 / step, "epoch": step})
        reporter.flush()
        sent.set()

    worker = threading.Thread(target=train, daemon=True)
    began = time.monotonic()
    worker.start()
    time.sleep(OUTAGE_S)
    assert not sent.is_set(), "the API was away, yet the reporter claims it delivered"
    with server:
        worker.join(timeout=120)
        assert sent.is_set()
        with httpx.Client(base_url=f"{server.url}/api/v1") as api:
            loss = api.get(f"/runs/{run_id}/metrics/train/loss").json()
    assert time.monotonic() - began >= OUTAGE_S
    assert loss["steps"] == [1, 2, 3, 4, 5]
    assert loss["values"] == pytest.approx([1 / s for s in range(1, 6)])
