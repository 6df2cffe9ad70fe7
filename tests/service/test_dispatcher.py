"""The dispatcher on a real local Ray with 4 GPUs declared on the CPU machine.

The attempts run `workers.idle.idle_attempt`, a real Ray task that speaks the worker
protocol (started, heartbeats, finished) but holds its resources instead of training.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from service.dispatcher import Dispatcher, DispatchPolicy
from service.settings import Settings
from tests.conftest import ThreadServer
from workers.idle import idle_attempt

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "digits"}}
FAST = DispatchPolicy(lease_interval_s=0.5, start_grace_s=120)


@pytest.fixture(scope="module", autouse=True)
def fake_gpu_cluster() -> Iterator[None]:
    ray.init(num_cpus=8, num_gpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@contextmanager
def service(
    tmp_path: Path, body: Callable[..., Any], policy: DispatchPolicy = FAST
) -> Iterator[tuple[httpx.Client, Dispatcher]]:
    """A real API server on loopback with a dispatcher whose attempts run `body`."""
    settings = Settings(data_dir=tmp_path / "data")
    with ThreadServer(settings, dispatch=False) as server:
        state = server.server.config.app.state
        worker_settings = settings.model_copy(update={"api_url": server.url})
        dispatcher = Dispatcher(state.store, state.queue, worker_settings, policy=policy, body=body)
        state.dispatcher = dispatcher
        dispatcher.start()
        try:
            with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as client:
                yield client, dispatcher
        finally:
            dispatcher.stop()


def submit(client: httpx.Client, resources: dict, seeds: int = 1, priority: int = 0) -> list[int]:
    body = {"spec": SPEC | {"resources": resources}, "seeds": list(range(seeds))}
    body |= {"priority": priority, "policy": "force-new"}
    response = client.post("/specs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["created"]


def cancel_all(client: httpx.Client, run_ids: list[int]) -> None:
    for run_id in run_ids:
        assert client.post(f"/runs/{run_id}/cancel").status_code == 200


def statuses(client: httpx.Client, run_ids: list[int]) -> list[str]:
    return [client.get(f"/runs/{run_id}").json()["status"] for run_id in run_ids]


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def started(client: httpx.Client, run_id: int) -> bool:
    """The attempt runs inside Ray: its worker reported in."""
    attempts = client.get(f"/runs/{run_id}").json()["attempts"] or []
    return bool(attempts) and attempts[-1]["node"] is not None


def test_fractional_gpus_pack_per_gpu_and_nothing_waits_inside_ray(tmp_path: Path) -> None:
    hold = functools.partial(idle_attempt, hold_s=120.0)
    with service(tmp_path, hold) as (client, dispatcher):
        big = submit(client, {"gpus": 0.75, "cpus": 0.5}, seeds=5)
        small = submit(client, {"gpus": 0.25, "cpus": 0.5}, seeds=5)
        # four 0.75s fill four GPUs; a fifth does not fit; 0.25s fit beside them, four only
        wait_for(lambda: all(started(client, r) for r in big[:4] + small[:4]), 60, "8 start")
        assert statuses(client, big[4:] + small[4:]) == ["QUEUED", "QUEUED"]
        assert len(dispatcher.in_flight()) == 8
        assert ray.available_resources().get("GPU", 0) < 1e-6
        cancel_all(client, big + small)
        wait_for(lambda: dispatcher.in_flight() == [], 10, "every attempt stopped")


def test_two_halves_share_a_gpu(tmp_path: Path) -> None:
    hold = functools.partial(idle_attempt, hold_s=120.0)
    with service(tmp_path, hold) as (client, dispatcher):
        halves = submit(client, {"gpus": 0.5, "cpus": 0.5}, seeds=9)
        wait_for(lambda: sum(started(client, r) for r in halves) == 8, 60, "8 halves start")
        assert statuses(client, halves).count("QUEUED") == 1
        cancel_all(client, halves)
        wait_for(lambda: dispatcher.in_flight() == [], 10, "every attempt stopped")


def test_priority_then_age_decides_who_starts_next(tmp_path: Path) -> None:
    hold = functools.partial(idle_attempt, hold_s=1.0)
    with service(tmp_path, hold) as (client, _):
        whole = {"gpus": 4, "cpus": 1}
        [blocker] = submit(client, whole)
        wait_for(lambda: started(client, blocker), 30, "the blocker starts")
        first, second = submit(client, whole), submit(client, whole)
        urgent = submit(client, whole, priority=5)
        runs = first + second + urgent
        wait_for(lambda: set(statuses(client, runs)) == {"SUCCEEDED"}, 60, "all succeed")
        order = sorted(runs, key=lambda r: client.get(f"/runs/{r}").json()["started_at"])
        assert order == urgent + first + second


def test_cancel_stops_a_running_run_and_frees_its_gpus_within_10_s(tmp_path: Path) -> None:
    hold = functools.partial(idle_attempt, hold_s=120.0)
    with service(tmp_path, hold) as (client, dispatcher):
        whole = {"gpus": 4, "cpus": 1}
        [running], [waiting] = submit(client, whole), submit(client, whole)
        wait_for(lambda: started(client, running), 30, "the first run starts")
        assert client.post(f"/runs/{running}/cancel").json()["status"] == "CANCELLED"
        took = wait_for(lambda: started(client, waiting), 10, "the waiting run takes the GPUs")
        assert took < 10
        assert [a for a in dispatcher.in_flight() if a[0] == running] == []
        client.post(f"/runs/{waiting}/cancel")


def test_a_silent_attempt_loses_its_lease_and_the_run_goes_again(tmp_path: Path) -> None:
    flaky = functools.partial(idle_attempt, hold_s=1.0, silent_attempts=1)
    policy = DispatchPolicy(lease_interval_s=0.5, start_grace_s=15.0)
    with service(tmp_path, flaky, policy) as (client, dispatcher):
        [run_id] = submit(client, {"gpus": 1, "cpus": 0.5})
        wait_for(lambda: statuses(client, [run_id]) == ["SUCCEEDED"], 60, "it succeeds")
        run = client.get(f"/runs/{run_id}").json()
        assert run["attempt"] == 2
        assert "no heartbeat" in run["attempts"][0]["exit_reason"]
        # the run ends when the worker reports; its Ray task is reaped on a later pass
        wait_for(lambda: dispatcher.in_flight() == [], 10, "the attempt is reaped")


def test_on_restart_a_surviving_worker_is_killed_and_its_run_requeued(tmp_path: Path) -> None:
    long_hold = functools.partial(idle_attempt, hold_s=300.0)
    with service(tmp_path, long_hold) as (client, dispatcher):
        [run_id] = submit(client, {"gpus": 1, "cpus": 0.5})
        wait_for(lambda: started(client, run_id), 30, "the run starts")
        state = client  # the old dispatcher dies; its worker lives on (an orphan)
        dispatcher._stop.set()
        dispatcher._thread.join(timeout=10)
        queue = dispatcher.queue
        orphan = queue.attempt(run_id, 1).ray_worker_pid
        os.kill(orphan, 0)
        again = Dispatcher(
            dispatcher.store, queue, dispatcher.settings, policy=FAST,
            body=functools.partial(idle_attempt, hold_s=0.5),
        )  # fmt: skip
        again.start()
        try:
            wait_for(lambda: statuses(state, [run_id]) == ["SUCCEEDED"], 60, "it succeeds")
        finally:
            again.stop()
        run = client.get(f"/runs/{run_id}").json()
        assert run["attempt"] == 2
        assert "killed" in run["attempts"][0]["exit_reason"]
        wait_for(lambda: not _alive(orphan), 10, "the orphan is gone")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" not in status
