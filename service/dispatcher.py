"""The dispatcher: claims queued runs when the Ray cluster can hold them, and watches them.

The database is the queue. The dispatcher keeps no backlog inside Ray: it models every
node's CPUs, memory and each GPU's free share, starts an attempt only where the whole
request fits now, and pins it to that node, so every waiting run can still be
reprioritised or cancelled.

Each pass: reap attempts that left Ray, expire lapsed leases, then fill free capacity by
priority, then age. On start it reconciles: every run the database calls RUNNING is
killed (if its worker is still alive) and requeued before any new run is claimed; the next
attempt resumes from the run's checkpoint. Adopting a live attempt is not possible here:
attempts are Ray tasks owned by the process that launched them, and Ray stops a task when
its owner dies.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import OutOfMemoryError, RayTaskError, TaskCancelledError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from loope.spec import ResourceSpec
from service.db import FailureKind, Run
from service.queue import RunQueue, Waiting
from service.settings import Settings
from service.store import Store
from workers.launch import run_body
from workers.runner import run_attempt

log = logging.getLogger(__name__)

GiB = 2**30
EPSILON = 1e-6

AttemptBody = Callable[..., Any]
"""What runs in Ray, called as
body(api_url, run_id, attempt, spec_body, seed, workdir, lease_interval_s, token)."""


@dataclass(frozen=True)
class DispatchPolicy:
    """How the dispatcher paces itself and when it gives up on a silent attempt.

    Attributes:
        lease_interval_s: how often a worker renews its lease.
        missed_intervals: renewals an attempt may miss before it is declared lost.
        start_grace_s: the lease a new attempt gets before its first renewal (imports,
            dataset loading).
        claim_batch: how many queued runs one pass looks at.
    """

    lease_interval_s: float = 5.0
    missed_intervals: int = 3
    start_grace_s: float = 120.0
    claim_batch: int = 256

    @property
    def lease_s(self) -> float:
        return self.lease_interval_s * self.missed_intervals


# --- the capacity model --------------------------------------------------------------------


@dataclass
class NodeCapacity:
    """What one node has free for new attempts: CPUs, memory, and each GPU's free share."""

    node_id: str
    cpus: float
    memory_gb: float
    gpus: list[float]

    def place(self, need: ResourceSpec) -> list[tuple[int, float]] | None:
        """Reserve one worker's request here; returns the GPU shares taken, None if no fit.

        A share below 1 goes to the GPU whose free share fits it most tightly; whole GPUs
        must be entirely free.
        """
        if need.cpus > self.cpus + EPSILON or need.memory_gb > self.memory_gb + EPSILON:
            return None
        taken = self._gpus_for(need.gpus)
        if taken is None:
            return None
        self.take(need, taken)
        return taken

    def _gpus_for(self, gpus: float) -> list[tuple[int, float]] | None:
        if gpus == 0:
            return []
        if gpus < 1:
            fitting = [i for i, free in enumerate(self.gpus) if free + EPSILON >= gpus]
            if not fitting:
                return None
            return [(min(fitting, key=lambda i: self.gpus[i]), gpus)]
        whole = [i for i, free in enumerate(self.gpus) if free >= 1 - EPSILON]
        return [(i, 1.0) for i in whole[: int(gpus)]] if len(whole) >= gpus else None

    def take(self, need: ResourceSpec, gpus: list[tuple[int, float]], sign: float = 1) -> None:
        self.cpus -= sign * need.cpus
        self.memory_gb -= sign * need.memory_gb
        for index, share in gpus:
            self.gpus[index] -= sign * share


@dataclass
class Placement:
    """Where an attempt's workers were placed: (node, GPU shares) per worker."""

    need: ResourceSpec
    workers: list[tuple[str, list[tuple[int, float]]]] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return self.workers[0][0]


def place(nodes: dict[str, NodeCapacity], need: ResourceSpec) -> Placement | None:
    """Place all of a run's workers, or none of them."""
    placement = Placement(need)
    for _ in range(need.workers):
        for node in nodes.values():
            taken = node.place(need)
            if taken is not None:
                placement.workers.append((node.node_id, taken))
                break
        else:
            release(nodes, placement)
            return None
    return placement


def fits_when_idle(totals: dict[str, NodeCapacity], need: ResourceSpec) -> bool:
    """Whether a run could be placed on these nodes with nothing else running."""
    idle = {i: NodeCapacity(i, n.cpus, n.memory_gb, list(n.gpus)) for i, n in totals.items()}
    return place(idle, need) is not None


def _describe_cluster(totals: dict[str, NodeCapacity]) -> str:
    nodes = [f"{n.cpus:g} CPU, {len(n.gpus)} GPU, {n.memory_gb:.0f} GB" for n in totals.values()]
    return f"{len(nodes)} node(s): " + "; ".join(nodes)


def release(nodes: dict[str, NodeCapacity], placement: Placement) -> None:
    for node_id, gpus in placement.workers:
        if node_id in nodes:
            nodes[node_id].take(placement.need, gpus, sign=-1)


def cluster_capacity() -> dict[str, NodeCapacity]:
    """Every alive node's total CPUs, memory and GPUs as Ray reports them."""
    nodes = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        nodes[node["NodeID"]] = NodeCapacity(
            node_id=node["NodeID"],
            cpus=resources.get("CPU", 0.0),
            memory_gb=resources.get("memory", 0.0) / GiB,
            gpus=[1.0] * int(resources.get("GPU", 0)),
        )
    return nodes


# --- the dispatcher ------------------------------------------------------------------------


@dataclass
class InFlight:
    run_id: int
    attempt: int
    placement: Placement
    ref: Any
    memory_gb: float


class Dispatcher:
    def __init__(
        self,
        store: Store,
        queue: RunQueue,
        settings: Settings,
        *,
        policy: DispatchPolicy | None = None,
        body: AttemptBody = run_attempt,
    ) -> None:
        self.store = store
        self.queue = queue
        self.settings = settings
        self.policy = policy or DispatchPolicy()
        self.body = body
        self.api_url = settings.resolved_api_url()
        self.artifact_root = settings.resolved_artifact_root()
        self._remote = ray.remote(run_body)
        self._in_flight: dict[Any, InFlight] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nodes: dict[str, NodeCapacity] = {}
        self._nodes_read_at = 0.0
        self._too_large: set[int] = set()
        self._fits_idle: dict[tuple[float, float, float, int], bool] = {}

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
        """Kill and requeue every run the database calls RUNNING that this process does not hold.

        Runs before the first claim. A worker that survived its owner is killed on its node
        by process id; one that cannot be reached is refused at its next heartbeat and stops
        itself. Either way the next attempt resumes from the checkpoint.
        """
        with self._lock:
            held = {(f.run_id, f.attempt) for f in self._in_flight.values()}
        for run in self.queue.running():
            if (run.id, run.attempt) in held:
                continue
            stopped = self._kill_orphan(run)
            reason = f"infra_lost: the service restarted during attempt {run.attempt}; {stopped}"
            if self.queue.fail(run.id, run.attempt, FailureKind.INFRA_LOST, reason):
                log.info("reconciled run %d: attempt %d %s", run.id, run.attempt, stopped)

    def _kill_orphan(self, run: Run) -> str:
        found = self.queue.attempt(run.id, run.attempt)
        if found is None or not found.ray_node_id or not found.ray_worker_pid:
            return "its worker never reported, so none was left to stop"
        alive = {node["NodeID"] for node in ray.nodes() if node.get("Alive")}
        if found.ray_node_id not in alive:
            return "its node is gone"
        marker = f"ray::run-{run.id}-attempt-{run.attempt}"
        killer = _kill_worker.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(found.ray_node_id, soft=False)
        )
        try:
            killed = ray.get(killer.remote(found.ray_worker_pid, marker), timeout=30)
        except Exception as error:  # the node is unreachable: the heartbeat refusal stops it
            return f"its node did not answer ({error!r}); the worker stops at its next heartbeat"
        return "its surviving worker was killed" if killed else "its worker had already exited"

    # --- the loop ----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not ray.is_initialized():
                log.info("Ray has shut down; the dispatcher stops")
                return
            try:
                self.step()
            except Exception:
                log.exception("dispatcher pass failed; retrying")
            self._wake.wait(self.settings.dispatch_interval_s)
            self._wake.clear()

    def step(self) -> None:
        """One pass: reap finished attempts, expire lapsed leases, start what fits."""
        self._reap()
        self._expire_leases()
        self._fill()

    def _capacity(self) -> dict[str, NodeCapacity]:
        """Free capacity: the nodes' totals (re-read every 2 s) minus what is in flight."""
        if time.monotonic() - self._nodes_read_at > 2.0 or not self._nodes:
            self._nodes, self._nodes_read_at = cluster_capacity(), time.monotonic()
            self._fits_idle.clear()
        nodes = {
            node_id: NodeCapacity(node_id, n.cpus, n.memory_gb, list(n.gpus))
            for node_id, n in self._nodes.items()
        }
        with self._lock:
            for flight in self._in_flight.values():
                for node_id, gpus in flight.placement.workers:
                    if node_id in nodes:
                        nodes[node_id].take(flight.placement.need, gpus)
        return nodes

    def _fill(self) -> None:
        # NOTE: a run that does not fit now is passed over for smaller ones behind it, so a
        # large request can wait while small ones keep filling the gaps.
        nodes = self._capacity()
        for waiting in self.queue.queued(limit=self.policy.claim_batch):
            placement = place(nodes, waiting.resources)
            if placement is None:
                self._note_too_large(waiting)
                continue
            if not self._launch(waiting, placement):
                release(nodes, placement)

    def _note_too_large(self, waiting: Waiting) -> None:
        """Log once a run that would not fit even on the idle cluster: it waits for nodes
        that may join, and whoever reads the log learns why it does not start."""
        if waiting.run_id in self._too_large or not self._nodes:
            return
        need = waiting.resources
        shape = (need.gpus, need.cpus, need.memory_gb, need.workers)
        if shape not in self._fits_idle:  # one answer per request shape and cluster reading
            self._fits_idle[shape] = fits_when_idle(self._nodes, need)
        if self._fits_idle[shape]:
            return
        self._too_large.add(waiting.run_id)
        log.warning(
            "run %d waits: it asks for %s, more than this cluster has even when idle (%s); "
            "it starts when larger nodes join, or cancel it",
            waiting.run_id, _describe(waiting.resources), _describe_cluster(self._nodes),
        )  # fmt: skip

    def _launch(self, waiting: Waiting, placement: Placement) -> bool:
        claimed = self.queue.claim(waiting.run_id, self.policy.start_grace_s)
        if claimed is None:
            return False
        run, spec = claimed
        need = placement.need
        workdir = self.artifact_root / "runs" / str(run.id)
        options = _task_options(need, placement.node_id, f"run-{run.id}-attempt-{run.attempt}")
        ref = self._remote.options(**options).remote(
            self.body, self.api_url, run.id, run.attempt, spec.body, run.seed, str(workdir),
            self.policy.lease_interval_s, self.settings.worker_token,
        )  # fmt: skip
        with self._lock:
            self._in_flight[ref] = InFlight(run.id, run.attempt, placement, ref, need.memory_gb)
        self.queue.record_launch(run.id, run.attempt, ref.task_id().hex(), placement.node_id)
        log.info(
            "started run %d attempt %d on node %s (%s)",
            run.id, run.attempt, placement.node_id[:8], _describe(need),
        )  # fmt: skip
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
        kind, reason = _classify_exit(flight)
        if kind is None:
            return
        status = self.queue.fail(flight.run_id, flight.attempt, kind, reason)
        if status is not None:
            log.warning("run %d attempt %d: %s -> %s", flight.run_id, flight.attempt, kind, status)

    def _expire_leases(self) -> None:
        for run in self.queue.expired():
            lease_s = self.policy.lease_s
            reason = (
                f"infra_lost: attempt {run.attempt} sent no heartbeat for {lease_s:g} s "
                f"({self.policy.missed_intervals} missed intervals of "
                f"{self.policy.lease_interval_s:g} s); it was stopped and the run requeued"
            )
            if self.queue.fail(run.id, run.attempt, FailureKind.INFRA_LOST, reason) is None:
                continue
            log.warning("run %d attempt %d lost its lease", run.id, run.attempt)
            if not self.stop_attempt(run.id, run.attempt):
                self._kill_orphan(run)

    def stop_attempt(self, run_id: int, attempt: int) -> bool:
        """Kill a cancelled or lost attempt now; Ray frees its resources when it exits."""
        with self._lock:
            refs = [
                f.ref
                for f in self._in_flight.values()
                if (f.run_id, f.attempt) == (run_id, attempt)
            ]
        for ref in refs:
            ray.cancel(ref, force=True, recursive=True)
            log.info("stopped run %d attempt %d", run_id, attempt)
        self.wake()
        return bool(refs)

    def in_flight(self) -> list[tuple[int, int]]:
        """(run, attempt) of every attempt this dispatcher holds in Ray."""
        with self._lock:
            return [(f.run_id, f.attempt) for f in self._in_flight.values()]


def _task_options(need: ResourceSpec, node_id: str, name: str) -> dict[str, Any]:
    """Ray options of an attempt; a data-parallel attempt only coordinates its workers."""
    single = need.workers == 1
    options: dict[str, Any] = {
        "num_cpus": need.cpus if single else 0,
        "num_gpus": need.gpus if single else 0,
        "max_retries": 0,
        "name": name,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
    }
    if single and need.memory_gb > 0:
        options["memory"] = int(need.memory_gb * GiB)
    return options


def _classify_exit(flight: InFlight) -> tuple[FailureKind | None, str]:
    """Why an attempt left Ray; None when there is nothing to do (it reported, or we stopped it)."""
    try:
        ray.get(flight.ref)
    except TaskCancelledError:
        return None, ""
    except OutOfMemoryError as error:
        asked = _describe(flight.placement.need)
        detail = str(error).splitlines()[0][:500]
        return FailureKind.OUT_OF_MEMORY, f"out of memory: the run asked for {asked}; {detail}"
    except RayTaskError as error:
        return FailureKind.INFRA_LOST, f"infra_lost: the worker failed outside training: {error}"[
            -4000:
        ]
    except Exception as error:  # the worker process or its node died
        kind = lost_worker_kind(str(error))
        return kind, f"{kind.value}: the worker was lost: {error}"[-4000:]
    return FailureKind.INFRA_LOST, "infra_lost: the worker ended without reporting an outcome"


PREEMPTION_MARKERS = ("due to node preemption", "died by preemption", "drain_preempted")
"""What Ray writes when a node was drained for preemption. Its message for any dead node
also says the node may have been preempted, so the bare word proves nothing."""


def lost_worker_kind(message: str) -> FailureKind:
    """PREEMPTED when Ray says the node was preempted, else INFRA_LOST."""
    text = message.lower()
    preempted = any(marker in text for marker in PREEMPTION_MARKERS)
    return FailureKind.PREEMPTED if preempted else FailureKind.INFRA_LOST


def _describe(need: ResourceSpec) -> str:
    parts = [f"{need.cpus:g} CPU", f"{need.gpus:g} GPU", f"{need.memory_gb:g} GB memory"]
    per = f" per worker × {need.workers} workers" if need.workers > 1 else ""
    return ", ".join(parts) + per


@ray.remote(num_cpus=0, max_retries=0)
def _kill_worker(pid: int, marker: str) -> bool:
    """Kill an orphaned attempt's worker on this node, if `pid` is still that worker."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            title = cmdline.read().replace(b"\0", b" ").decode(errors="replace").split()
    except OSError:
        return False
    if not title or title[0] != marker:
        return False
    os.kill(pid, signal.SIGKILL)
    return True


def connect_ray(settings: Settings) -> None:
    """Join the cluster at `ray_address`, or start a local Ray of the configured size.

    `ray.init` replaces the SIGTERM handler with one that raises SystemExit wherever the
    server happens to be, which the server logs as an error; the server's own handler (a
    graceful stop) is put back.
    """
    if ray.is_initialized():
        return
    in_main = threading.current_thread() is threading.main_thread()
    on_sigterm = signal.getsignal(signal.SIGTERM) if in_main else None
    try:
        _init_ray(settings)
    finally:
        if on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)


def _init_ray(settings: Settings) -> None:
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if settings.ray_address:
        ray.init(address=settings.ray_address, **options)
        log.info("joined the Ray cluster at %s", settings.ray_address)
        return
    ray.init(
        num_cpus=settings.ray_num_cpus,
        num_gpus=settings.ray_num_gpus,
        object_store_memory=256 * 2**20,
        **options,
    )
    log.info("started a local Ray with %s", ray.cluster_resources())
