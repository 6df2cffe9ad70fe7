"""Scheduler speed on a warm local Ray: queued -> running latency, and draining 1,000 runs.

The API server (uvicorn, SQLite file) runs in a thread; the dispatcher launches
`workers.idle.idle_attempt` (started, lease, finished over HTTP; no training). Latency is
`started_at - created_at` of runs submitted one at a time with the cluster free.

Usage: .venv/bin/python bench/bench_scheduler.py [--latency-runs 100] [--drain-runs 1000]
"""

from __future__ import annotations

import argparse
import json
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

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "digits"}, "resources": {"cpus": 0.25}}
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


def submit(client: httpx.Client, seeds: list[int]) -> list[int]:
    body = {"spec": SPEC, "seeds": seeds, "policy": "force-new"}
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


def latency(client: httpx.Client, runs: int) -> list[float]:
    """Seconds from queued to running, one run at a time on a free cluster."""
    seconds = []
    for seed in range(runs):
        [run_id] = submit(client, [seed])
        run = wait_status(client, run_id, {"RUNNING", "SUCCEEDED"}, 60)
        created, started = (_parse(run[k]) for k in ("created_at", "started_at"))
        seconds.append(started - created)
        wait_status(client, run_id, {"SUCCEEDED"}, 60)
    return seconds


def drain(client: httpx.Client, runs: int) -> float:
    """Seconds from submitting `runs` no-op runs at once until none is queued or running."""
    start = time.monotonic()
    submit(client, list(range(10_000, 10_000 + runs)))
    deadline = start + 1800
    while time.monotonic() < deadline:
        counts = client.get("/health").json()["runs"]
        if counts.get("QUEUED", 0) == 0 and counts.get("RUNNING", 0) == 0:
            return time.monotonic() - start
        time.sleep(0.2)
    raise TimeoutError("the queue did not drain in 30 minutes")


def _parse(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--drain-runs", type=int, default=1000)
    parser.add_argument("--num-cpus", type=int, default=4)
    args = parser.parse_args()

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
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
            latency(client, 5)  # warm the Ray workers
            seconds = sorted(latency(client, args.latency_runs))
            drained = drain(client, args.drain_runs)
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
        },
        "setup": f"local Ray, {args.num_cpus} CPUs declared, runs ask 0.25 CPU; SQLite; "
        "idle attempt body (started, lease, finished over HTTP)",
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ray.shutdown()


if __name__ == "__main__":
    main()
