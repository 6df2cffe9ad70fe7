"""Train one run (a spec and a seed) on one device, checkpointing every epoch.

Metrics go to a callback as (step, {key: value}); the service's worker forwards them over
HTTP, `loope train` prints them. A checkpoint in the run's directory is picked up on the
next start, so a run interrupted after epoch k continues with epoch k + 1.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from loope.data import DataBundle, Split, load_dataset, three_cell
from loope.models import build_model
from loope.spec import ExperimentSpec, TrainSpec

log = logging.getLogger(__name__)

MetricCallback = Callable[[int, dict[str, float]], None]
Outcome = Literal["succeeded", "diverged"]
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainResult:
    """How a run ended: its outcome, the last epoch done and the final test metrics."""

    outcome: Outcome
    epochs_done: int
    step: int
    test: dict[str, float] = field(default_factory=dict)
    resumed_from_epoch: int | None = None
    diverged_at_step: int | None = None


class DivergedError(Exception):
    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"loss became {loss} at step {step}")
        self.step = step


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but no CUDA device is visible")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def cosine_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine from 1 down to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: nn.Module, recipe: TrainSpec) -> torch.optim.Optimizer:
    """Two groups: weight-decayed matrices, and the rest (biases, norms, exempt PE tables)."""
    exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or name in exempt or name.endswith(".bias")
        (no_decay if skip else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def batches(
    split: Split, batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shuffled batches; the order depends only on (seed, epoch), so resume needs no state."""
    order = torch.randperm(
        len(split), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
    )
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield split.images[index], split.targets[index]


class Trainer:
    """The training loop of one run."""

    def __init__(
        self,
        spec: ExperimentSpec,
        seed: int,
        workdir: Path | None = None,
        on_metrics: MetricCallback | None = None,
        data: DataBundle | None = None,
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.workdir = workdir
        self.on_metrics = on_metrics or (lambda step, metrics: None)
        self.device = resolve_device(spec.train.device)
        self.data = data or load_dataset(spec.dataset)
        seed_everything(seed)
        self.model = self._build_model().to(self.device)
        self.optimizer = build_optimizer(self.model, spec.train)
        steps_per_epoch = math.ceil(len(self.data.train) / spec.train.batch_size)
        self.total_steps = steps_per_epoch * spec.train.epochs
        warmup = steps_per_epoch * spec.train.warmup_epochs
        floor = spec.train.min_lr / spec.train.lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_factor(s, self.total_steps, warmup, floor)
        )
        self.epoch = 0
        self.step = 0
        self.resumed_from_epoch: int | None = None
        self._resume_checked = False

    def _build_model(self) -> nn.Module:
        model_spec, data = self.spec.model, self.data
        return build_model(
            model_spec.arch,
            model_spec.size,
            self.spec.pe.name,
            img_size=data.img_size,
            patch_size=model_spec.patch_size or data.natural_patch,
            num_classes=data.num_outputs,
            in_chans=data.in_chans,
            pe_options=self.spec.pe.build_options(),
        )

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.data.task == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, targets)

    def fit(self) -> TrainResult:
        resumed = self.resume()
        try:
            while self.epoch < self.spec.train.epochs:
                self._train_epoch()
                self.epoch += 1
                self._report(self.evaluate(self.data.val, "val") | {"epoch": float(self.epoch)})
                self._save()
        except DivergedError as diverged:
            log.warning("run diverged: %s", diverged)
            return TrainResult("diverged", self.epoch, self.step, {}, resumed, diverged.step)
        test = self.evaluate(self.data.test, "test")
        self._report(test | self._baseline())
        return TrainResult("succeeded", self.epoch, self.step, test, resumed)

    def _train_epoch(self) -> None:
        self.model.train()
        recipe = self.spec.train
        total, count = 0.0, 0
        for images, targets in batches(self.data.train, recipe.batch_size, self.seed, self.epoch):
            images, targets = images.to(self.device), targets.to(self.device)
            loss = self.loss(self.model(images), targets)
            if not torch.isfinite(loss):
                self._report({"train/loss": loss.item()})
                raise DivergedError(self.step, loss.item())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            total, count = total + loss.item() * len(targets), count + len(targets)
        self._report({"train/loss": total / count, "lr": self.scheduler.get_last_lr()[0]})

    @torch.no_grad()
    def evaluate(self, split: Split, prefix: str) -> dict[str, float]:
        self.model.eval()
        logits = torch.cat(
            [self.model(images.to(self.device)).float().cpu() for images, _ in _chunks(split)]
        )
        metrics = {f"{prefix}/loss": self.loss(logits, split.targets).item()}
        if self.data.task == "multilabel":
            scores = three_cell.score((logits > 0).numpy(), split.targets.numpy())
            metrics |= {f"{prefix}/{key}": value for key, value in scores.items()}
            metrics[f"{prefix}/acc"] = scores["average"]
        else:
            accuracy = (logits.argmax(1) == split.targets).float().mean().item()
            metrics[f"{prefix}/acc"] = 100.0 * accuracy
        return metrics

    def _baseline(self) -> dict[str, float]:
        if self.data.baseline is None:
            return {}
        return {f"baseline/{key}": value for key, value in self.data.baseline.items()}

    def _report(self, metrics: dict[str, float]) -> None:
        self.on_metrics(self.step, metrics)

    def _checkpoint_path(self) -> Path | None:
        return self.workdir / CHECKPOINT_NAME if self.workdir else None

    def _save(self) -> None:
        path = self._checkpoint_path()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }
        temporary = path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(path)  # atomic: a crash mid-write leaves the previous checkpoint

    def resume(self) -> int | None:
        """Load the run's checkpoint if there is one; returns the epoch it resumes from."""
        if self._resume_checked:
            return self.resumed_from_epoch
        self._resume_checked = True
        path = self._checkpoint_path()
        if path is None or not path.exists():
            return None
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step = state["epoch"], state["step"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        log.info("resumed from epoch %d (step %d) of %s", self.epoch, self.step, path)
        self.resumed_from_epoch = self.epoch
        return self.epoch


def _chunks(split: Split, size: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), size):
        yield split.images[start : start + size], split.targets[start : start + size]


def train(
    spec: ExperimentSpec,
    seed: int,
    workdir: Path | None = None,
    on_metrics: MetricCallback | None = None,
) -> TrainResult:
    """Train `spec` with `seed`, resuming from `workdir`'s checkpoint if one is there."""
    return Trainer(spec, seed, workdir, on_metrics).fit()
