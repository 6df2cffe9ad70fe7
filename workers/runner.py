"""What runs inside Ray for one attempt of a run: train with `loope`, report over HTTP.

The worker never opens the database. It renews its lease, tells the API when it started
(and from which epoch it resumed), streams metrics, records its artifacts (checkpoint and
plots, with checksums) and reports how the attempt ended.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from pathlib import Path
from typing import Any

import ray
import torch

from loope.spec import ExperimentSpec
from loope.train import Trainer, TrainResult
from workers import artifacts
from workers.distributed import WorkerLostError, fit_data_parallel
from workers.heartbeat import LeaseKeeper
from workers.reporter import ApiClient, MetricReporter

log = logging.getLogger(__name__)

TRACEBACK_TAIL = 4000

Outcome = tuple[str, str | None, str | None]
"""(outcome, failure kind, reason) as the /finished route takes them."""


def run_attempt(
    api_url: str,
    run_id: int,
    attempt: int,
    spec_body: dict[str, Any],
    seed: int,
    workdir: str,
    lease_interval_s: float = 5.0,
    token: str | None = None,
) -> str:
    """Train one attempt of a run while renewing its lease; returns the outcome it reported."""
    spec = ExperimentSpec.model_validate(spec_body)
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    client = ApiClient(api_url, token)
    reporter = MetricReporter(client, run_id, attempt)
    try:
        with LeaseKeeper(api_url, run_id, attempt, lease_interval_s, token):
            outcome, failure_kind, reason = _train(
                spec, seed, Path(workdir), client, reporter, run_id, attempt
            )
            reporter.flush()
            _record_artifacts(client, run_id, attempt, Path(workdir))
        finished = {"attempt": attempt, "outcome": outcome}
        if failure_kind:
            finished |= {"failure_kind": failure_kind, "reason": reason}
        client.post(f"/runs/{run_id}/finished", finished)
        return outcome
    finally:
        client.close()


def _train(
    spec: ExperimentSpec,
    seed: int,
    workdir: Path,
    client: ApiClient,
    reporter: MetricReporter,
    run_id: int,
    attempt: int,
) -> Outcome:
    try:
        result = _fit(spec, seed, workdir, client, reporter, run_id, attempt)
    except WorkerLostError as error:
        reporter.flush()
        return "failed", "infra_lost", f"infra_lost: {error}"[:TRACEBACK_TAIL]
    except torch.OutOfMemoryError as error:
        reporter.flush()
        return "failed", "out_of_memory", out_of_memory_reason(spec, error)
    except Exception:
        reporter.flush()
        return "failed", "user_code", "user_code: " + traceback.format_exc()[-TRACEBACK_TAIL:]
    if result.outcome == "diverged":
        step = result.diverged_at_step
        return "diverged", "diverged", f"diverged: the loss was not finite at step {step}"
    return "succeeded", None, None


def _fit(
    spec: ExperimentSpec,
    seed: int,
    workdir: Path,
    client: ApiClient,
    reporter: MetricReporter,
    run_id: int,
    attempt: int,
) -> TrainResult:
    if spec.resources.workers > 1:

        def started(resumed_from_epoch: int | None) -> None:
            _post_started(client, run_id, attempt, resumed_from_epoch)

        return fit_data_parallel(spec, seed, workdir, reporter.target(), started)
    trainer = Trainer(spec, seed, workdir, reporter)
    _post_started(client, run_id, attempt, trainer.resume())
    return trainer.fit()


def _post_started(
    client: ApiClient, run_id: int, attempt: int, resumed_from_epoch: int | None
) -> None:
    body: dict[str, Any] = {
        "attempt": attempt,
        "node": socket.gethostname(),
        "resumed_from_epoch": resumed_from_epoch,
        "ray_worker_pid": os.getpid(),
    }
    if ray.is_initialized():
        body["ray_node_id"] = ray.get_runtime_context().get_node_id()
    client.post(f"/runs/{run_id}/started", body)
    if resumed_from_epoch is not None:
        log.info("run %d attempt %d resumed from epoch %d", run_id, attempt, resumed_from_epoch)


def _record_artifacts(client: ApiClient, run_id: int, attempt: int, workdir: Path) -> None:
    for record in artifacts.collect(workdir):
        response = client.post(f"/runs/{run_id}/artifacts", {"attempt": attempt, **record})
        if response.status_code >= 400:
            log.warning("artifact refused for run %d: %s", run_id, response.text[:300])


def out_of_memory_reason(spec: ExperimentSpec, error: BaseException) -> str:
    """The user-facing OOM message: says OOM, and what memory the run asked for."""
    need = spec.resources
    asked = f"{need.memory_gb:g} GB host memory, {need.gpus:g} GPU, batch {spec.train.batch_size}"
    first_line = str(error).strip().splitlines()[0][:500] if str(error).strip() else ""
    return f"out of memory: the run asked for {asked}; {first_line}"
