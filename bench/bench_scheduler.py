"""Scheduler speed on a warm local Ray: queued -> running latency, and draining 1,000 runs.

The API server (uvicorn, SQLite file) runs in a thread; the dispatcher launches
`workers.idle.idle_attempt` (started, lease, finished over HTTP; no training). Latency is
`started_at - created_at` of runs submitted one at a time with the cluster free.

Warm means the Ray worker pool is started before anything is timed: one worker process
per run that fits at once (`--num-cpus / --run-cpus`), each with the attempt body's modules
imported. A run asks `--run-cpus` so that no more runs fit at once than the pool has
workers; with more concurrent tasks than that, Ray starts extra workers and kills them when
idle, and the drain measures process start-up instead of the scheduler.

The bench waits (bounded) for the 1-minute load average to fall below `--calm-load` and
records the load averages it ran under.

Usage: .venv/bin/python bench/bench_scheduler.py [--latency-runs 100] [--drain-runs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import ray
import uvicorn

from api.app import create_app
from service.dispatcher import Dispatcher, DispatchPolicy
from service.settings import Settings
from workers.idle import idle_attempt

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "digits"}}
DRAIN_SEED = 10_000
RESULTS = Path(__file__).parent / "results" / "scheduler.json"


def serve(settings: Settings, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings, dispatch=False), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    return server


def submit(client: httpx.Client, seeds: list[int], run_cpus: float) -> list[int]:
    spec = SPEC | {"resources": {"cpus": run_cpus}}
    body = {"spec": spec, "seeds": seeds, "policy": "force-new"}
    response = client.post("/specs", json=body)
    response.raise_for_status()
    return response.json()["created"]


def wait_status(client: httpx.Client, run_id: int, wanted: set[str], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.get(f"/runs/{run_id}").json()
        if run["status"] in wanted:
            return run
        time.sleep(0.01)
    raise TimeoutError(f"run {run_id} not in {wanted} after {timeout_s} s")


@ray.remote(max_retries=0)
def _warm_worker(hold_s: float) -> int:
    """Hold a worker process for `hold_s` with the attempt body's modules imported."""
    import workers.idle  # noqa: F401

    time.sleep(hold_s)
    return os.getpid()


def warm_pool(workers: int, run_cpus: float) -> int:
    """Start `workers` Ray worker processes at once (each holds a run's CPUs); returns how many."""
    holders = [_warm_worker.options(num_cpus=run_cpus).remote(2.0) for _ in range(workers)]
    return len(set(ray.get(holders, timeout=600)))


def wait_calm(load: float, patience_s: float) -> float:
    """Wait (at most `patience_s`) for the 1-minute load average to fall below `load`."""
    deadline = time.monotonic() + patience_s
    while os.getloadavg()[0] >= load and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def latency(client: httpx.Client, runs: int, run_cpus: float) -> list[float]:
    """Seconds from queued to running, one run at a time on a free cluster."""
    seconds = []
    for seed in range(runs):
        [run_id] = submit(client, [seed], run_cpus)
        run = wait_status(client, run_id, {"RUNNING", "SUCCEEDED"}, 60)
        created, started = (_parse(run[k]) for k in ("created_at", "started_at"))
        seconds.append(started - created)
        wait_status(client, run_id, {"SUCCEEDED"}, 60)
    return seconds


def drain(client: httpx.Client, runs: int, run_cpus: float) -> float:
    """Seconds from submitting `runs` no-op runs at once until none is queued or running."""
    start = time.monotonic()
    submit(client, list(range(DRAIN_SEED, DRAIN_SEED + runs)), run_cpus)
    deadline = start + 1800
    while time.monotonic() < deadline:
        counts = client.get("/health").json()["runs"]
        if counts.get("QUEUED", 0) == 0 and counts.get("RUNNING", 0) == 0:
            return time.monotonic() - start
        time.sleep(0.2)
    raise TimeoutError("the queue did not drain in 30 minutes")


def worker_processes(database: Path, first_seed: int) -> int:
    """How many Ray worker processes ran the attempts of the runs from `first_seed` on."""
    with sqlite3.connect(database) as db:
        query = (
            "SELECT COUNT(DISTINCT a.ray_worker_pid) FROM attempts a "
            "JOIN runs r ON r.id = a.run_id WHERE r.seed >= ?"
        )
        return db.execute(query, (first_seed,)).fetchone()[0]


def _parse(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--drain-runs", type=int, default=1000)
    parser.add_argument("--num-cpus", type=int, default=4)
    parser.add_argument("--run-cpus", type=float, default=1.0, help="CPUs each no-op run asks")
    parser.add_argument("--calm-load", type=float, default=3.0)
    parser.add_argument("--calm-wait-s", type=float, default=300.0)
    args = parser.parse_args()
    pool = int(args.num_cpus / args.run_cpus)

    load_at_start = wait_calm(args.calm_load, args.calm_wait_s)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    warmed = warm_pool(pool, args.run_cpus)
    with tempfile.TemporaryDirectory() as data_dir:
        port = 18765
        settings = Settings(data_dir=Path(data_dir), api_url=f"http://127.0.0.1:{port}")
        server = serve(settings, port)
        state = server.config.app.state
        dispatcher = Dispatcher(
            state.store, state.queue, settings, policy=DispatchPolicy(), body=idle_attempt
        )
        state.dispatcher = dispatcher
        dispatcher.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=60) as client:
            latency(client, 5, args.run_cpus)  # the server's and the workers' first requests
            seconds = sorted(latency(client, args.latency_runs, args.run_cpus))
            load_before_drain = os.getloadavg()
            drained = drain(client, args.drain_runs, args.run_cpus)
            load_after_drain = os.getloadavg()
            processes = worker_processes(Path(data_dir) / "loope.db", DRAIN_SEED)
        dispatcher.stop()
        server.should_exit = True

    result = {
        "queued_to_running_ms": {
            "p50": round(1000 * statistics.median(seconds), 1),
            "p99": round(1000 * seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))], 1),
            "runs": len(seconds),
        },
        "drain": {
            "runs": args.drain_runs,
            "seconds": round(drained, 1),
            "runs_per_s": round(args.drain_runs / drained, 1),
            "ray_worker_processes": processes,
            "load_average_1_5_15_before": [round(x, 2) for x in load_before_drain],
            "load_average_1_5_15_after": [round(x, 2) for x in load_after_drain],
        },
        "setup": f"local Ray, {args.num_cpus} CPUs declared on a {os.cpu_count()}-core machine, "
        f"runs ask {args.run_cpus:g} CPU, worker pool pre-warmed with {warmed} processes; "
        f"SQLite; idle attempt body (started, lease, finished over HTTP); 1-minute load "
        f"average {load_at_start:.2f} at start (waited for < {args.calm_load:g}, at most "
        f"{args.calm_wait_s:g} s)",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ray.shutdown()


if __name__ == "__main__":
    main()
