"""Data-parallel training of one attempt with Ray Train: `resources.workers` ranks, one run.

Every rank builds the same :class:`loope.train.Trainer` (same seed, so the same initial
weights, batch order and augmentations) and replaces its model by a :class:`ShardedModel`:
the full batch goes in, each rank runs its own slice of it through a DDP replica, and the
slices' outputs are gathered back into the full batch's outputs. Every rank therefore
computes the single-worker loss on the whole batch, and the gradients, summed over ranks
by DDP, are the single-worker gradients: the effective batch is `train.batch_size`, not
`workers × batch_size`.

Rank 0 alone reports metrics and writes the checkpoint, in the same format as a single
worker's (a data-parallel run resumes from a single-worker checkpoint and the other way
round). The attempt's own process (the Ray task the dispatcher launched) renews the lease
and owns the Ray Train controller, so cancelling or killing that task stops every rank;
a guard then frees the ranks' reserved resources.

NOTE: dropout draws its masks per rank for that rank's rows, so with `train.dropout > 0` a
data-parallel run matches a single worker's only in distribution, not bit for bit.
NOTE: NCCL refuses two ranks on one GPU: on GPUs, ask `gpus: 1` (or more) per worker.
NOTE: Ray Train places the ranks itself (PACK); the dispatcher's model assumes the same
greedy packing, which holds on one node and may differ on a cluster.

Shapes: B the full batch, b the rank's slice, b_max the largest slice, K the outputs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import ray
import torch
import torch.distributed as dist
from ray import PlacementGroupID
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from loope.spec import ExperimentSpec
from loope.train import CHECKPOINT_NAME, MetricCallback, Trainer, TrainResult
from workers.reporter import ReportTarget

log = logging.getLogger(__name__)

Backend = Literal["gloo", "nccl"]
StartedCallback = Callable[[int | None], None]
RESULT_FILE = "result.json"


class WorkerLostError(RuntimeError):
    """A rank's process or node died: infrastructure, not the run's code."""


def shard_sizes(batch: int, world_size: int) -> list[int]:
    """Rows of a batch each rank takes: as even as possible, the first ranks one more."""
    base, extra = divmod(batch, world_size)
    return [base + (rank < extra) for rank in range(world_size)]


class _GatherRows(torch.autograd.Function):
    """All-gather every rank's rows into the full batch; backward keeps this rank's rows.

    Every rank computes the same loss on the gathered outputs, so the gradient of the full
    output is the same everywhere and this rank's share of it is its own rows.
    """

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.rows = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
        padded = local.new_zeros((max(sizes), *local.shape[1:]))  # (b_max, K)
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])  # (B, K)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad[ctx.rows], None, None  # (b, K)


def _sum_gradients(state, bucket):
    """DDP communication hook: the sum over ranks, since each rank holds only its rows' part.

    NOTE: unannotated on purpose: DDP compares the annotations with `dist.GradBucket` and
    `Future[Tensor]` themselves, and postponed (string) annotations fail that check.
    """
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda done: done.value()[0])


class ShardedModel(nn.Module):
    """The model as every rank's Trainer sees it: full batch in, full batch's outputs out.

    Its state dict is the plain model's, so checkpoints match a single worker's.
    """

    def __init__(self, model: nn.Module, rank: int, world_size: int) -> None:
        super().__init__()
        device = next(model.parameters()).device
        device_ids = None if device.type == "cpu" else [device]
        self.replica = DistributedDataParallel(model, device_ids=device_ids)
        self.replica.register_comm_hook(None, _sum_gradients)
        self.rank, self.world_size = rank, world_size

    @property
    def plain(self) -> nn.Module:
        return self.replica.module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        sizes = shard_sizes(len(images), self.world_size)
        start = sum(sizes[: self.rank])
        local = self.replica(images[start : start + sizes[self.rank]])  # (b, K)
        return _GatherRows.apply(local, sizes, self.rank)  # (B, K)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.plain.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.plain.load_state_dict(*args, **kwargs)


class RankTrainer(Trainer):
    """A rank's Trainer: the model sharded over the ranks; only rank 0 writes checkpoints."""

    def __init__(
        self,
        spec: ExperimentSpec,
        seed: int,
        workdir: Path,
        rank: int,
        world_size: int,
        on_metrics: MetricCallback | None,
    ) -> None:
        super().__init__(spec, seed, workdir, on_metrics)
        self.rank = rank
        self.model = ShardedModel(self.model, rank, world_size)

    def _save(self) -> None:
        if self.rank == 0:
            super()._save()


# --- inside each Ray Train worker ----------------------------------------------------------


def train_rank(config: dict[str, Any]) -> None:
    """The Ray Train loop of one rank; rank 0 reports metrics and hands back the result."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    spec = ExperimentSpec.model_validate(config["spec"])
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    if spec.resources.gpus > 0:
        torch.cuda.set_device(ray.train.torch.get_device())

    if rank == 0:
        ray.get(config["guard"].watch.remote(ray.util.get_current_placement_group()))
    reporter = config["target"].open() if rank == 0 else None
    try:
        trainer = RankTrainer(spec, config["seed"], Path(config["workdir"]), rank, world, reporter)
        result = trainer.fit()
    finally:
        if reporter is not None:
            reporter.flush()
            reporter.client.close()
    _hand_back(result, rank)


def _hand_back(result: TrainResult, rank: int) -> None:
    """Every rank reports once (a barrier); rank 0's report carries the result."""
    import ray.train

    summary = asdict(result)
    if rank != 0:
        ray.train.report(summary)
        return
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / RESULT_FILE).write_text(json.dumps(summary))
        ray.train.report(summary, checkpoint=ray.train.Checkpoint.from_directory(folder))


# --- in the attempt's own process ----------------------------------------------------------


def fit_data_parallel(
    spec: ExperimentSpec,
    seed: int,
    workdir: Path,
    target: ReportTarget,
    started: StartedCallback,
) -> TrainResult:
    """Train `spec` on `resources.workers` Ray Train ranks; returns rank 0's result.

    `started` is called with the epoch the ranks resume from (None for a fresh run) before
    they start. Ray Train's bookkeeping goes to a folder beside the run's own, removed after.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    need = spec.resources
    backend: Backend = "nccl" if need.gpus > 0 else "gloo"
    resumed_from = checkpoint_epoch(workdir)
    started(resumed_from)

    storage = workdir.parent / f"{workdir.name}.ray-train"
    guard = start_guard([_per_worker(spec)] * need.workers)
    config = {"spec": spec.model_dump(mode="json"), "seed": seed,
              "workdir": str(workdir), "target": target, "guard": guard}  # fmt: skip
    trainer = TorchTrainer(
        train_rank,
        train_loop_config=config,
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(
            num_workers=need.workers, use_gpu=need.gpus > 0, resources_per_worker=_per_worker(spec)
        ),
        run_config=RunConfig(
            name=f"run-{target.run_id}-attempt-{target.attempt}",
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    log.info("run %d: %d %s ranks", target.run_id, need.workers, backend)
    try:
        return _result(trainer.fit())
    finally:
        ray.kill(guard)
        shutil.rmtree(storage, ignore_errors=True)


@ray.remote(num_cpus=0, max_restarts=0)
class PlacementGroupGuard:
    """Removes the ranks' placement group when the attempt's process dies without doing so.

    Ray Train's own cleaner asks the state API (the dashboard), which the service's Ray may
    not run, and a placement group lives as long as the job (the service) that owns it: a
    cancelled or killed attempt would keep its ranks' CPUs and GPUs reserved. The guard is a
    detached actor on the attempt's node that watches the attempt's process id.

    Rank 0 registers the group as soon as it runs. If the attempt dies before that (while
    the ranks start), the guard removes the one group created since it started whose bundles
    are this attempt's request.
    NOTE: two data-parallel attempts of the same request dying within the same start-up
    window are ambiguous; the guard then removes nothing and logs it.
    """

    CHECK_INTERVAL_S = 0.25

    def __init__(self, attempt_pid: int, bundles: list[dict[str, float]]) -> None:
        self.attempt_pid = attempt_pid
        self.bundles = bundles
        self.before = set(ray.util.placement_group_table())
        self.group: Any = None
        threading.Thread(target=self._watch_forever, name="pg-guard", daemon=True).start()

    def watch(self, group: Any) -> None:
        self.group = group

    def _watch_forever(self) -> None:
        while _process_alive(self.attempt_pid):
            time.sleep(self.CHECK_INTERVAL_S)
        group_id = self.group.id.hex() if self.group is not None else self._unregistered()
        if group_id is not None:
            log.warning("attempt process %d died; removing placement group %s",
                        self.attempt_pid, group_id)  # fmt: skip
            ray.util.remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(group_id)))
        os._exit(0)

    def _unregistered(self) -> str | None:
        """The one live group created since the guard started with this attempt's bundles."""
        table = ray.util.placement_group_table()
        found = [
            group_id
            for group_id, group in table.items()
            if group_id not in self.before
            and group["state"] != "REMOVED"
            and _same_bundles(list(group["bundles"].values()), self.bundles)
        ]
        if len(found) != 1:
            log.warning("attempt process %d died; %d candidate placement groups, removing none",
                        self.attempt_pid, len(found))  # fmt: skip
            return None
        return found[0]


def _same_bundles(bundles: list[dict[str, float]], wanted: list[dict[str, float]]) -> bool:
    keys = ("CPU", "GPU")
    return len(bundles) == len(wanted) and all(
        abs(got.get(key, 0) - want.get(key, 0)) < 1e-6
        for got, want in zip(bundles, wanted, strict=True)
        for key in keys
    )


def start_guard(bundles: list[dict[str, float]]) -> Any:
    """A placement-group guard for the calling process, on its node; kill it when done."""
    here = ray.get_runtime_context().get_node_id()
    guard = PlacementGroupGuard.options(
        lifetime="detached",
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    ).remote(os.getpid(), bundles)
    ray.get(guard.__ray_ready__.remote())  # its list of earlier groups precedes the ranks'
    return guard


def _process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has exited, it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _per_worker(spec: ExperimentSpec) -> dict[str, float]:
    need = spec.resources
    resources: dict[str, float] = {"CPU": need.cpus}
    if need.gpus > 0:
        resources["GPU"] = need.gpus
    if need.memory_gb > 0:
        resources["memory"] = math.ceil(need.memory_gb * 2**30)
    return resources


def checkpoint_epoch(workdir: Path) -> int | None:
    """The epoch the run's checkpoint holds, which the ranks will resume from (None: none)."""
    path = workdir / CHECKPOINT_NAME
    if not path.exists():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])


def _result(outcome: Any) -> TrainResult:
    """Rank 0's TrainResult from Ray Train's result, or the ranks' error raised again."""
    if outcome.error is not None:
        raise _unwrap(outcome.error)
    with outcome.checkpoint.as_directory() as folder:
        summary = json.loads((Path(folder) / RESULT_FILE).read_text())
    return TrainResult(**summary)


def _unwrap(error: BaseException) -> BaseException:
    """The exception a rank raised (OOM stays OOM); a dead rank becomes WorkerLostError."""
    from ray.exceptions import ActorDiedError, RayActorError, WorkerCrashedError

    failures = getattr(error, "worker_failures", None) or {}
    for rank, failure in sorted(failures.items()):
        cause = getattr(failure, "cause", None) or failure
        if isinstance(cause, (ActorDiedError, RayActorError, WorkerCrashedError)):
            return WorkerLostError(f"rank {rank} was lost: {cause}")
        if isinstance(cause, Exception):
            return cause
    return error
