"""Data-parallel runs (`resources.workers: 2`) on a real local Ray with gloo, through the service.

The reference is one worker's Trainer on the same spec and seed, in this process. Two ranks
must give the same train/val/test metrics: losses within LOSS_RTOL (float sums in another
order), thresholded scores (accuracies, Three-Cell groups) equal.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import ray

from loope.spec import ExperimentSpec
from loope.train import CHECKPOINT_NAME, Trainer
from service.dispatcher import Dispatcher
from service.settings import Settings
from tests.conftest import ThreadServer
from workers.distributed import shard_sizes

SEED = 3
LOSS_RTOL = 1e-4
SCORE_ATOL = 1e-6
TWO_RANKS = {
    "pe": {"name": "loope"},
    "dataset": {"name": "three-cell", "preset": "quick", "n": 300},
    # 240 training images in batches of 25: the last batch (15) splits 8/7 between ranks
    "train": {"epochs": 2, "batch_size": 25},
    "resources": {"workers": 2, "cpus": 1},
}


@pytest.fixture(scope="module", autouse=True)
def two_cpu_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[tuple[int, str], float], Path]:
    """One worker's metrics by (step, key), and its checkpoint after epoch 1."""
    workdir = tmp_path_factory.mktemp("one-worker")
    metrics: dict[tuple[int, str], float] = {}
    spec = ExperimentSpec.model_validate(TWO_RANKS)

    def record(step: int, values: dict[str, float]) -> None:
        metrics.update({(step, key): value for key, value in values.items()})

    trainer = Trainer(spec, SEED, workdir, record)
    trainer.fit(until_epoch=1)
    after_one = shutil.copy(workdir / CHECKPOINT_NAME, workdir / "epoch-1.pt")
    trainer.fit()
    return metrics, Path(after_one)


@contextmanager
def service(tmp_path: Path) -> Iterator[tuple[httpx.Client, Dispatcher, Path]]:
    """A real API server on loopback and a dispatcher running real attempts (not started)."""
    settings = Settings(data_dir=tmp_path / "data")
    with ThreadServer(settings, dispatch=False) as server:
        state = server.server.config.app.state
        worker_settings = settings.model_copy(update={"api_url": server.url})
        dispatcher = Dispatcher(state.store, state.queue, worker_settings)
        state.dispatcher = dispatcher
        try:
            with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as client:
                yield client, dispatcher, settings.resolved_artifact_root()
        finally:
            dispatcher.stop()


def submit(client: httpx.Client, spec: dict) -> int:
    response = client.post("/specs", json={"spec": spec, "seeds": [SEED], "policy": "force-new"})
    assert response.status_code == 201, response.text
    return response.json()["created"][0]


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def final(client: httpx.Client, run_id: int, timeout_s: float = 900) -> dict:
    def ended() -> bool:
        return client.get(f"/runs/{run_id}").json()["status"] not in ("QUEUED", "RUNNING")

    wait_for(ended, timeout_s, f"run {run_id} ends")
    return client.get(f"/runs/{run_id}").json()


def served_metrics(
    client: httpx.Client, run_id: int, keys: set[str]
) -> dict[tuple[int, str], float]:
    """Every point of `keys` the service holds for the run; fails on a duplicated step."""
    points = {}
    for key in keys:
        series = client.get(f"/runs/{run_id}/metrics/{key}").json()
        assert len(series["steps"]) == len(set(series["steps"])), f"{key} reported twice"
        points |= {
            (step, key): value
            for step, value in zip(series["steps"], series["values"], strict=True)
        }
    return points


def assert_matches(got: dict[tuple[int, str], float], want: dict[tuple[int, str], float]) -> None:
    assert got.keys() == want.keys()
    for point, value in want.items():
        if point[1].endswith("loss"):
            assert got[point] == pytest.approx(value, rel=LOSS_RTOL), point
        else:
            assert got[point] == pytest.approx(value, abs=SCORE_ATOL), point


def test_shards_cover_the_batch_as_evenly_as_possible() -> None:
    assert shard_sizes(15, 2) == [8, 7]
    assert shard_sizes(1, 2) == [1, 0]
    assert sum(shard_sizes(1000, 3)) == 1000 and max(shard_sizes(1000, 3)) == 334


def test_two_gloo_ranks_match_one_worker_and_the_run_succeeds(
    tmp_path: Path, reference: tuple[dict, Path]
) -> None:
    want, _ = reference
    with service(tmp_path) as (client, dispatcher, artifacts):
        dispatcher.start()
        run_id = submit(client, TWO_RANKS)
        run = final(client, run_id)
        assert run["status"] == "SUCCEEDED", run["failure_reason"]
        assert run["attempts"][0]["resumed_from_epoch"] is None
        assert_matches(served_metrics(client, run_id, {k for _, k in want}), want)
        # rank 0 alone wrote the checkpoint, in the run's folder, and nothing else is left
        assert [p.name for p in (artifacts / "runs" / str(run_id)).iterdir()] == [CHECKPOINT_NAME]
        assert not (artifacts / "runs" / f"{run_id}.ray-train").exists()


def test_two_ranks_resume_from_one_workers_checkpoint(
    tmp_path: Path, reference: tuple[dict, Path]
) -> None:
    want, after_one = reference
    with service(tmp_path) as (client, dispatcher, artifacts):
        run_id = submit(client, TWO_RANKS)
        workdir = artifacts / "runs" / str(run_id)
        workdir.mkdir(parents=True)
        shutil.copy(after_one, workdir / CHECKPOINT_NAME)
        dispatcher.start()
        run = final(client, run_id)
        assert run["status"] == "SUCCEEDED", run["failure_reason"]
        assert run["attempts"][0]["resumed_from_epoch"] == 1
        first_epoch_ends = step_of_epoch(want, 1)
        epoch_two = {point: value for point, value in want.items() if point[0] > first_epoch_ends}
        assert_matches(served_metrics(client, run_id, {k for _, k in want}), epoch_two)


def step_of_epoch(metrics: dict[tuple[int, str], float], epoch: int) -> int:
    return next(step for (step, key), value in metrics.items() if key == "epoch" and value == epoch)


def test_cancel_stops_every_rank_and_frees_their_cpus_within_10_s(tmp_path: Path) -> None:
    long_run = TWO_RANKS | {"train": {"epochs": 50, "batch_size": 25}}
    with service(tmp_path) as (client, dispatcher, _):
        dispatcher.start()
        run_id = submit(client, long_run)
        wait_for(
            lambda: ray.available_resources().get("CPU", 0) < 1e-6, 300, "both ranks hold a CPU"
        )
        assert client.post(f"/runs/{run_id}/cancel").json()["status"] == "CANCELLED"
        took = wait_for(
            lambda: ray.available_resources().get("CPU", 0) >= 2, 10, "the ranks' CPUs are free"
        )
        assert took < 10
        wait_for(lambda: dispatcher.in_flight() == [], 10, "the attempt has left Ray")
