"""What runs inside Ray for one attempt of a run: train with `loope`, report over HTTP.

The worker never opens the database. It tells the API when it started (and from which
epoch it resumed), streams metrics, and reports how the attempt ended.
"""

from __future__ import annotations

import logging
import socket
import traceback
from pathlib import Path
from typing import Any

import torch

from loope.spec import ExperimentSpec
from loope.train import Trainer
from workers.reporter import ApiClient, MetricReporter

log = logging.getLogger(__name__)

TRACEBACK_TAIL = 4000


def run_attempt(
    api_url: str,
    run_id: int,
    attempt: int,
    spec_body: dict[str, Any],
    seed: int,
    workdir: str,
    token: str | None = None,
) -> str:
    """Train one attempt of a run; returns the outcome it reported."""
    spec = ExperimentSpec.model_validate(spec_body)
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    client = ApiClient(api_url, token)
    reporter = MetricReporter(client, run_id, attempt)
    try:
        outcome, failure_kind, reason = _train(
            spec, seed, Path(workdir), client, reporter, run_id, attempt
        )
        reporter.flush()
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
) -> tuple[str, str | None, str | None]:
    try:
        trainer = Trainer(spec, seed, workdir, reporter)
        started = {"attempt": attempt, "node": socket.gethostname()}
        client.post(f"/runs/{run_id}/started", started | {"resumed_from_epoch": trainer.resume()})
        result = trainer.fit()
    except torch.OutOfMemoryError as error:
        return "failed", "out_of_memory", f"out of memory: {error}"[:TRACEBACK_TAIL]
    except Exception:
        reporter.flush()
        return "failed", "user_code", traceback.format_exc()[-TRACEBACK_TAIL:]
    if result.outcome == "diverged":
        return "diverged", "diverged", f"loss not finite at step {result.diverged_at_step}"
    return "succeeded", None, None
