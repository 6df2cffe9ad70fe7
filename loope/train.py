"""Train one run (a spec and a seed) on one device, checkpointing every epoch.

Metrics go to a callback as (step, {key: value}); the service's worker forwards them over
HTTP, `loope train` prints them. A checkpoint in the run's directory is picked up on the
next start, so a run interrupted after epoch k continues with epoch k + 1, exactly: the
checkpoint holds the model, optimiser, scheduler, gradient scaler, every random state, the
epoch and the step, and the batch order depends only on (seed, epoch).

A step is one optimiser update (`accumulation` batches). A non-finite loss ends the run as
diverged at the step it occurred in.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from loope.data import DataBundle, Split, load_dataset, three_cell
from loope.data.augment import Augmenter
from loope.models import build_model
from loope.models.checkpoint import load_checkpoint
from loope.models.resolution import evaluate_at_sizes
from loope.spec import ExperimentSpec, Precision, TrainSpec

log = logging.getLogger(__name__)

MetricCallback = Callable[[int, dict[str, float]], None]
StepCallback = Callable[[int], None]
Outcome = Literal["succeeded", "diverged", "paused"]
CHECKPOINT_NAME = "checkpoint.pt"
AUTOCAST_DTYPES: dict[Precision, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    """How a run ended: its outcome, the last epoch done and the final test metrics.

    `paused` means `fit(until_epoch=k)` stopped after epoch k with a checkpoint to resume.
    """

    outcome: Outcome
    epochs_done: int
    step: int
    test: dict[str, float] = field(default_factory=dict)
    resumed_from_epoch: int | None = None
    diverged_at_step: int | None = None
    split: str = ""


class DivergedError(Exception):
    """The loss became NaN or infinite at `step`."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"loss became {loss} at step {step}")
        self.step = step


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (init, dropout)."""
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


def batch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch; it depends only on (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def batches(
    split: Split, batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches (float images in [0, 1], targets) in the order of :func:`batch_order`."""
    order = batch_order(len(split), seed, epoch)
    for start in range(0, len(order), batch_size):
        yield split.take(order[start : start + batch_size])


class Trainer:
    """The training loop of one run.

    `on_step`, if given, is called after every optimiser step with the step count (for a
    progress bar); `total_steps` is the run's length in steps.
    """

    def __init__(
        self,
        spec: ExperimentSpec,
        seed: int,
        workdir: Path | None = None,
        on_metrics: MetricCallback | None = None,
        data: DataBundle | None = None,
        on_step: StepCallback | None = None,
    ) -> None:
        self.spec = spec
        self.recipe = spec.train
        self.seed = seed
        self.workdir = workdir
        self.on_metrics = on_metrics or (lambda step, metrics: None)
        self.on_step = on_step
        self.device = resolve_device(spec.train.device)
        self.data = data or load_dataset(spec.dataset)
        seed_everything(seed)
        self.model = self._build_model().to(self.device)
        self.optimizer = build_optimizer(self.model, spec.train)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.recipe.precision == "fp16"
        )
        self.augmenter = Augmenter(spec.dataset.augment, seed=seed * 100_003 + 7)
        self.batches_per_epoch = math.ceil(len(self.data.train) / self.recipe.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.recipe.accumulation)
        self.total_steps = self.steps_per_epoch * self.recipe.epochs
        self.scheduler = self._build_scheduler()
        self.epoch = 0
        self.step = 0
        self.resumed_from_epoch: int | None = None
        self._resume_checked = False

    def _build_model(self) -> nn.Module:
        model_spec, data = self.spec.model, self.data
        model = build_model(
            model_spec.arch,
            model_spec.size,
            self.spec.pe.name,
            img_size=data.img_size,
            patch_size=model_spec.patch_size or data.natural_patch,
            num_classes=data.num_outputs,
            in_chans=data.in_chans,
            pe_options=self.spec.pe.build_options(),
            drop_rate=self.recipe.dropout,
        )
        if model_spec.checkpoint is not None:  # the starting weights; a resume overrides them
            load_checkpoint(model, model_spec.checkpoint)
        return model

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        warmup = self.steps_per_epoch * self.recipe.warmup_epochs
        floor = self.recipe.min_lr / self.recipe.lr
        total = self.total_steps
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_factor(s, total, warmup, floor)
        )

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """BCE with logits (multi-label) or cross-entropy, with the recipe's label smoothing."""
        smoothing = self.recipe.label_smoothing
        if self.data.task == "multilabel":
            smoothed = targets * (1 - smoothing) + 0.5 * smoothing
            return F.binary_cross_entropy_with_logits(logits, smoothed)
        return F.cross_entropy(logits, targets, label_smoothing=smoothing)

    def fit(self, until_epoch: int | None = None) -> TrainResult:
        """Train to the recipe's last epoch (or pause after `until_epoch`), then test."""
        resumed = self.resume()
        last = self.recipe.epochs if until_epoch is None else min(until_epoch, self.recipe.epochs)
        try:
            while self.epoch < last:
                self._train_epoch()
                self.epoch += 1
                self._report(self.evaluate(self.data.val, "val") | {"epoch": float(self.epoch)})
                self._save()
        except DivergedError as diverged:
            log.warning("run diverged: %s", diverged)
            return TrainResult(
                "diverged", self.epoch, self.step, {}, resumed, diverged.step, self.data.split
            )
        if self.epoch < self.recipe.epochs:
            return TrainResult("paused", self.epoch, self.step, {}, resumed, None, self.data.split)
        test = self.evaluate(self.data.test, "test")
        sizes = self.spec.model.eval_image_sizes
        test |= evaluate_at_sizes(self.model, self.data.test, sizes, self.evaluate)
        self._report(test | self._baseline() | self.data.sizes())
        return TrainResult("succeeded", self.epoch, self.step, test, resumed, None, self.data.split)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = AUTOCAST_DTYPES.get(self.recipe.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _prepare(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """Images on the device, augmented (training only) and normalised."""
        images = images.to(self.device)
        if train and self.augmenter:
            images = self.augmenter(images)
        if self.data.mean_std is not None:
            mean, std = (
                torch.tensor(v, device=self.device)[:, None, None] for v in self.data.mean_std
            )
            images = (images - mean) / std
        return images

    def _train_epoch(self) -> None:
        self.model.train()
        total, count = 0.0, 0
        recipe = self.recipe
        for index, (images, targets) in enumerate(
            batches(self.data.train, recipe.batch_size, self.seed, self.epoch)
        ):
            images, targets = self._prepare(images, train=True), targets.to(self.device)
            with self._autocast():
                logits = self.model(images)
            loss = self.loss(logits.float(), targets)
            if not torch.isfinite(loss):
                self._report({"train/loss": loss.item()})
                raise DivergedError(self.step, loss.item())
            self.scaler.scale(loss / recipe.accumulation).backward()
            if (index + 1) % recipe.accumulation == 0 or index + 1 == self.batches_per_epoch:
                self._optimizer_step()
            total, count = total + loss.item() * len(targets), count + len(targets)
        self._report({"train/loss": total / count, "lr": self.scheduler.get_last_lr()[0]})

    def _optimizer_step(self) -> None:
        """One update: unscale and clip if asked, step (the scaler skips inf gradients)."""
        if self.recipe.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        if self.on_step is not None:
            self.on_step(self.step)

    @torch.no_grad()
    def evaluate(self, split: Split, prefix: str) -> dict[str, float]:
        """Loss and accuracy on `split`; Three-Cell adds its per-bit and per-group scores."""
        self.model.eval()
        outputs = []
        for images, _ in _chunks(split):
            with self._autocast():
                outputs.append(self.model(self._prepare(images, train=False)).float().cpu())
        logits = torch.cat(outputs)
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
        metrics = {f"baseline/{key}": value for key, value in (self.data.baseline or {}).items()}
        rates = self.data.positive_rates or {}
        return metrics | {f"baseline/positive_{key}": value for key, value in rates.items()}

    def _report(self, metrics: dict[str, float]) -> None:
        self.on_metrics(self.step, metrics)

    def _checkpoint_path(self) -> Path | None:
        return self.workdir / CHECKPOINT_NAME if self.workdir else None

    def _rng_state(self) -> dict[str, Any]:
        state = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "augment": self.augmenter.generator.get_state(),
        }
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        self.augmenter.generator.set_state(state["augment"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda"])

    def _save(self) -> None:
        path = self._checkpoint_path()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "spec_hash": self.spec.spec_hash(),
            "seed": self.seed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": self._rng_state(),
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
        self._check_belongs(state, path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self._set_rng_state(state["rng"])
        log.info("resumed from epoch %d (step %d) of %s", self.epoch, self.step, path)
        self.resumed_from_epoch = self.epoch
        return self.epoch

    def _check_belongs(self, state: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint written for another spec or seed."""
        if state.get("spec_hash") != self.spec.spec_hash() or state.get("seed") != self.seed:
            raise ValueError(
                f"{path}: checkpoint of spec {str(state.get('spec_hash'))[:12]} seed "
                f"{state.get('seed')}, not of this run (spec {self.spec.spec_hash()[:12]} "
                f"seed {self.seed}); use another workdir"
            )


def _chunks(split: Split, size: int = 512) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), size):
        yield split.take(slice(start, start + size))


def train(
    spec: ExperimentSpec,
    seed: int,
    workdir: Path | None = None,
    on_metrics: MetricCallback | None = None,
) -> TrainResult:
    """Train `spec` with `seed`, resuming from `workdir`'s checkpoint if one is there."""
    return Trainer(spec, seed, workdir, on_metrics).fit()
