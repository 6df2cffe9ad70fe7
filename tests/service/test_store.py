"""The store's metric paths on SQLite and PostgreSQL: summaries merged in the database,
points written through the driver exactly, and the comparison's plain reads."""

from __future__ import annotations

import concurrent.futures
import math
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, insert, select, update

from loope.spec import ExperimentSpec
from service.db import (
    MetricPoint,
    Run,
    RunStatus,
    Spec,
    Sweep,
    SweepRun,
    ValueKind,
    make_engine,
    make_sessionmaker,
)
from service.migrations import upgrade
from service.store import PointIn, RunRequest, Store

BODY = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = make_engine(database_url)
    yield Store(make_sessionmaker(engine))
    engine.dispose()


def new_runs(store: Store, seeds: list[int], sweep: dict | None = None) -> list[int]:
    requests = [RunRequest(ExperimentSpec.model_validate(BODY), BODY, s) for s in seeds]
    return store.submit(requests, sweep=sweep).created


def test_summaries_merge_batches_arriving_in_any_order(store: Store) -> None:
    [run_id] = new_runs(store, [0])
    late = [PointIn("val/loss", s, 2.0 + s) for s in range(5, 10)]  # best 7.0 at step 5
    early = [PointIn("val/loss", s, 10.0 - s) for s in range(5)]  # best 6.0 at step 4
    accuracy = [PointIn("val/acc", 0, 0.5), PointIn("val/acc", 1, 0.9), PointIn("val/acc", 2, 0.7)]
    assert store.ingest(run_id, 1, late + accuracy[:1]) == 6
    assert store.ingest(run_id, 1, early + accuracy[1:]) == 7
    assert store.ingest(run_id, 1, early) == 0, "stored points are ignored, not counted again"
    loss, acc = (store.summaries([run_id])[run_id][k] for k in ("val/loss", "val/acc"))
    assert (loss.last, loss.last_step, loss.count) == (11.0, 9, 10)
    assert (loss.best, loss.best_step) == (6.0, 4)
    assert (acc.last, acc.last_step, acc.best, acc.best_step, acc.count) == (0.7, 2, 0.9, 1, 3)


def test_special_values_are_stored_exactly_and_never_become_best(store: Store) -> None:
    [run_id] = new_runs(store, [0])
    values = [2.0, math.nan, math.inf, -math.inf, -0.0]
    store.ingest(run_id, 1, [PointIn("x", s, v) for s, v in enumerate(values)])
    got = [v for _, v in store.series(run_id, "x")]
    assert got[0] == 2.0 and math.isnan(got[1]) and got[2:4] == [math.inf, -math.inf]
    assert got[4] == 0.0 and math.copysign(1.0, got[4]) == -1.0
    summary = store.summaries([run_id])[run_id]["x"]
    assert (summary.last, summary.last_kind, summary.best) == (0.0, ValueKind.NEG_ZERO, 2.0)
    with store.sessions() as session:
        kinds = session.scalars(select(MetricPoint.kind).order_by(MetricPoint.step)).all()
        stamped = session.scalars(select(MetricPoint.recorded_at)).all()
    assert kinds == [ValueKind.FINITE, *map(ValueKind, ("nan", "+inf", "-inf", "-0"))]
    assert all(moment is not None for moment in stamped)


def test_comparison_rows_read_values_by_key_and_sweep(store: Store) -> None:
    loose = new_runs(store, [0])
    swept = new_runs(store, [1, 2], sweep={"name": "s", "axes": {}, "seeds": [1, 2]})
    for run_id, value in zip(loose + swept, [1.0, math.nan, -0.0], strict=True):
        store.ingest(run_id, 1, [PointIn("test/acc", 0, value), PointIn("train/loss", 0, 9.0)])
    with store.sessions.begin() as session:
        session.execute(update(Run).values(status=RunStatus.SUCCEEDED))
    runs, specs, values = store.comparison_rows(None, ["test/"])
    assert [run[0] for run in runs] == loose + swept and set(specs) == {runs[0][1]}
    assert runs[0][3] == RunStatus.SUCCEEDED
    assert list(values) == ["test/acc"] and values["test/acc"][loose[0]] == 1.0
    assert math.isnan(values["test/acc"][swept[0]])
    assert math.copysign(1.0, values["test/acc"][swept[1]]) == -1.0
    sweep_id = store.get_run(swept[0])[0].sweep_id  # type: ignore[index]
    runs, _, values = store.comparison_rows(sweep_id, ["test/", "train/"])
    assert [run[0] for run in runs] == swept
    assert set(values) == {"test/acc", "train/loss"} and set(values["train/loss"]) == set(swept)


def test_concurrent_ingests_of_the_same_points_store_and_count_each_once(store: Store) -> None:
    """Writers racing with one batch: every point is stored once and counted once.

    On PostgreSQL two transactions can both find the points missing before either commits;
    only the rows a transaction actually wrote may be folded into the summaries.
    """
    [run_id] = new_runs(store, [0])
    points = [PointIn(f"m{k}", step, float(step)) for k in range(4) for step in range(500)]
    writers = 6
    start = threading.Barrier(writers)

    def write(_: int) -> int:
        start.wait(timeout=30)
        return store.ingest(run_id, 1, points)

    with concurrent.futures.ThreadPoolExecutor(writers) as pool:
        stored = list(pool.map(write, range(writers), timeout=120))
    assert sum(stored) == len(points), f"new points reported by the writers: {stored}"
    with store.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(MetricPoint))
    assert rows == len(points)
    summaries = store.summaries([run_id])[run_id]
    assert {key: s.count for key, s in summaries.items()} == {f"m{k}": 500 for k in range(4)}
    assert all((s.last, s.last_step, s.best) == (499.0, 499, 499.0) for s in summaries.values())


def test_a_resubmitted_sweep_has_every_cell_it_reused_skipped_or_created(store: Store) -> None:
    """A run belongs to each sweep that named its cell; `runs.sweep_id` is its creator."""
    requests = [RunRequest(ExperimentSpec.model_validate(BODY), BODY, s) for s in (0, 1, 2)]
    [loose] = new_runs(store, [5])  # same spec, outside every sweep
    first = store.submit(requests[:2], sweep={"axes": {}, "seeds": [0, 1]})
    again = store.submit(requests, sweep={"axes": {}, "seeds": [0, 1, 2]})
    skipped = store.submit(requests, sweep={"axes": {}, "seeds": [0, 1, 2]}, policy="skip")
    assert (len(again.created), sorted(again.reused)) == (1, sorted(first.created))
    assert (skipped.created, len(skipped.skipped)) == ([], 3)
    cells = sorted(first.created + again.created)

    def listed(sweep_id: int | None) -> list[int]:
        return [run.id for run, _ in store.list_runs(sweep_id=sweep_id)]

    assert listed(first.sweep_id) == sorted(first.created)
    assert listed(again.sweep_id) == cells and listed(skipped.sweep_id) == cells
    assert listed(None) == sorted([loose, *cells])
    creators = [run.sweep_id for run, _ in store.list_runs(sweep_id=again.sweep_id)]
    assert creators == [first.sweep_id, first.sweep_id, again.sweep_id]
    for run_id in cells:
        store.ingest(run_id, 1, [PointIn("test/acc", 0, 0.5)])
    runs, _, values = store.comparison_rows(skipped.sweep_id, ["test/"])
    assert [run[0] for run in runs] == cells and set(values["test/acc"]) == set(cells)


def test_migration_0005_makes_each_run_a_member_of_the_sweep_that_created_it(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    upgrade(engine, "0004")
    spec = {"spec_hash": "h", "canonical": {}, "body": {}, "pe": "none", "arch": "vit"}
    runs = [{"id": i, "sweep_id": s, "spec_id": 1, "seed": i, "status": RunStatus.QUEUED}
            for i, s in ((1, 7), (2, None), (3, 7))]  # fmt: skip
    with engine.begin() as connection:  # the tables at 0004 are the models' but sweep_runs
        connection.execute(insert(Sweep), {"id": 7, "axes": {}, "seeds": {"seeds": [0]}})
        connection.execute(insert(Spec), spec | {"id": 1, "dataset": "three-cell"})
        connection.execute(insert(Run), runs)
    store = Store(make_sessionmaker(engine))
    assert [run.id for run, _ in store.list_runs(sweep_id=7)] == [1, 3]
    with store.sessions() as session:
        members = session.execute(select(SweepRun.sweep_id, SweepRun.run_id)).all()
    assert sorted(members) == [(7, 1), (7, 3)]
    engine.dispose()
