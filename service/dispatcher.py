"""The dispatcher: claims queued runs when the Ray cluster can hold them, and watches them.

The database is the queue. The dispatcher keeps no backlog inside Ray: it starts an
attempt only when the run's CPUs and GPUs fit in what the cluster has left, so every
waiting run can still be reprioritised or cancelled.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayTaskError, TaskCancelledError

from service.db import FailureKind, Run, RunStatus
from service.queue import RunQueue
from service.settings import Settings
from service.store import Store
from workers.runner import run_attempt

log = logging.getLogger(__name__)

MAX_INFRA_REQUEUES = 5

_remote_attempt = ray.remote(run_attempt)


@dataclass
class InFlight:
    run_id: int
    attempt: int
    cpus: float
    gpus: float
    ref: Any


class Dispatcher:
    def __init__(self, store: Store, queue: RunQueue, settings: Settings) -> None:
        self.store = store
        self.queue = queue
        self.settings = settings
        self.api_url = settings.resolved_api_url()
        self.artifact_root = settings.resolved_artifact_root()
        self._in_flight: dict[Any, InFlight] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        connect_ray(self.settings)
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def reconcile(self) -> None:
        """Every run the database calls RUNNING but this dispatcher does not hold is requeued."""
        for run in self.queue.running():
            if self.queue.requeue(run.id, run.attempt, "service restarted; attempt not found"):
                log.info("requeued run %d after a restart (attempt %d lost)", run.id, run.attempt)

    # --- the loop ----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not ray.is_initialized():
                log.info("Ray has shut down; the dispatcher stops")
                return
            try:
                self._reap()
                self._fill()
            except Exception:
                log.exception("dispatcher pass failed; retrying")
            self._wake.wait(self.settings.dispatch_interval_s)
            self._wake.clear()

    def _free(self) -> tuple[float, float]:
        total = ray.cluster_resources()
        with self._lock:
            cpus = sum(f.cpus for f in self._in_flight.values())
            gpus = sum(f.gpus for f in self._in_flight.values())
        return total.get("CPU", 0.0) - cpus, total.get("GPU", 0.0) - gpus

    def _fill(self) -> None:
        free_cpus, free_gpus = self._free()
        for run in self.queue.queued(limit=64):
            if run.cpus > free_cpus + 1e-9 or run.gpus > free_gpus + 1e-9:
                continue
            if self._launch(run):
                free_cpus, free_gpus = free_cpus - run.cpus, free_gpus - run.gpus

    def _launch(self, run: Run) -> bool:
        claimed = self.queue.claim(run.id)
        if claimed is None:
            return False
        run, spec = claimed
        workdir = self.artifact_root / "runs" / str(run.id)
        task = _remote_attempt.options(
            num_cpus=run.cpus,
            num_gpus=run.gpus,
            max_retries=0,
            name=f"run-{run.id}-attempt-{run.attempt}",
        )
        ref = task.remote(self.api_url, run.id, run.attempt, spec.body, run.seed, str(workdir))
        with self._lock:
            self._in_flight[ref] = InFlight(run.id, run.attempt, run.cpus, run.gpus, ref)
        self.queue.record_launch(run.id, run.attempt, ref.task_id().hex())
        log.info("started run %d attempt %d (%s, seed %d)", run.id, run.attempt, spec.pe, run.seed)
        return True

    def _reap(self) -> None:
        with self._lock:
            refs = list(self._in_flight)
        if not refs:
            return
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in done:
            with self._lock:
                flight = self._in_flight.pop(ref)
            self._settle(flight)

    def _settle(self, flight: InFlight) -> None:
        """Make sure an attempt that left Ray left its run in a final or queued state."""
        try:
            ray.get(flight.ref)
            reason, kind = "worker ended without reporting an outcome", FailureKind.USER_CODE
        except TaskCancelledError:
            return
        except RayTaskError as error:
            reason, kind = f"worker error: {error}"[-4000:], FailureKind.INFRA_LOST
        except Exception as error:  # the worker process or its node died
            reason, kind = f"worker lost: {error!r}"[-4000:], FailureKind.INFRA_LOST
        found = self.store.get_run(flight.run_id)
        if found is None or found[0].status != RunStatus.RUNNING:
            return
        if found[0].attempt != flight.attempt:
            return
        if kind == FailureKind.INFRA_LOST and flight.attempt <= MAX_INFRA_REQUEUES:
            if self.queue.requeue(flight.run_id, flight.attempt, reason):
                log.warning(
                    "requeued run %d after a lost attempt %d", flight.run_id, flight.attempt
                )
            return
        self.queue.finish(flight.run_id, flight.attempt, RunStatus.FAILED, kind.value, reason)

    def stop_attempt(self, run_id: int, attempt: int) -> None:
        """Stop a cancelled run's attempt now; Ray frees its resources."""
        with self._lock:
            refs = [
                f.ref
                for f in self._in_flight.values()
                if (f.run_id, f.attempt) == (run_id, attempt)
            ]
        for ref in refs:
            ray.cancel(ref, force=True)
            log.info("cancelled run %d attempt %d", run_id, attempt)
        self.wake()


def connect_ray(settings: Settings) -> None:
    """Join the cluster at `ray_address`, or start a local Ray of the configured size."""
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if settings.ray_address:
        ray.init(address=settings.ray_address, **options)
        return
    ray.init(
        num_cpus=settings.ray_num_cpus,
        num_gpus=settings.ray_num_gpus,
        object_store_memory=256 * 2**20,
        **options,
    )
    log.info("started a local Ray with %s", ray.cluster_resources())
