"""An attempt body that holds its resources without training: for scheduler tests and bench.

It speaks the same protocol as the real runner (started, heartbeats, finished), so the
dispatcher, the queue and the API are exercised exactly as with a training run.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from workers.heartbeat import LeaseKeeper
from workers.reporter import ApiClient


def idle_attempt(
    api_url: str,
    run_id: int,
    attempt: int,
    spec_body: dict[str, Any],
    seed: int,
    workdir: str,
    lease_interval_s: float,
    token: str | None = None,
    *,
    hold_s: float = 0.0,
    silent_attempts: int = 0,
) -> dict[str, Any]:
    """Report started, hold for `hold_s`, report succeeded; returns where it ran.

    The first `silent_attempts` attempts never renew their lease and hang, the way a worker
    behind a network partition looks to the service.
    """
    client = ApiClient(api_url, token, patience_s=30)
    context = ray.get_runtime_context()
    started = {
        "attempt": attempt,
        "node": os.uname().nodename,
        "ray_node_id": context.get_node_id(),
        "ray_worker_pid": os.getpid(),
    }
    client.post(f"/runs/{run_id}/started", started)
    placed = {"gpu_ids": [str(g) for g in context.get_accelerator_ids().get("GPU", [])]}
    if attempt <= silent_attempts:
        time.sleep(3600)
    with LeaseKeeper(api_url, run_id, attempt, lease_interval_s, token):
        time.sleep(hold_s)
    client.post(f"/runs/{run_id}/finished", {"attempt": attempt, "outcome": "succeeded"})
    client.close()
    return placed
