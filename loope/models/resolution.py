"""Test a trained model at image sizes other than the one it was trained at.

The model is not changed: each PE applies the rule it declares for a grid other than the
one it was built for (`PEInfo.grid_rule`): computed afresh, resampled from its learned
table, evaluated without its image-dependent part (LOOPE: X_C = 0), or refused. The test
images are resized (bilinear, antialiased) batch by batch. The rules in use are logged
once per size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from loope.data import Split
from loope.pe import PositionalEmbedding

log = logging.getLogger(__name__)

Evaluate = Callable[[Split, str], dict[str, float]]
"""The trainer's evaluation: (split, metric prefix) -> metrics."""


class ResizedSplit(Split):
    """A split whose images are handed out resized to `size`×`size`; targets unchanged."""

    def __init__(self, split: Split, size: int) -> None:
        super().__init__(split.images, split.targets)
        self.size = size

    def take(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = super().take(index)
        if images.shape[-2:] == (self.size, self.size):
            return images, targets
        resized = F.interpolate(
            images, size=(self.size, self.size), mode="bilinear", antialias=True
        )  # B, C, H, W -> B, C, size, size
        return resized.clamp_(0, 1), targets


def grid_rules(model: nn.Module) -> dict[str, str]:
    """The rule each PE of `model` applies on another grid, by module name."""
    return {
        name or "pe": module.info.grid_rule
        for name, module in model.named_modules()
        if isinstance(module, PositionalEmbedding)
    }


def evaluate_at_sizes(
    model: nn.Module, split: Split, sizes: tuple[int, ...], evaluate: Evaluate, prefix: str = "test"
) -> dict[str, float]:
    """Metrics of `split` at each image size of `sizes`, keyed `<prefix>@<size>/<metric>`."""
    rules = grid_rules(model)
    refused = sorted(name for name, rule in rules.items() if rule == "unsupported")
    if sizes and refused:
        raise ValueError(
            f"model.eval_image_sizes: PE {', '.join(refused)} refuses a grid other than its own"
        )
    metrics: dict[str, float] = {}
    for size in sizes:
        described = ", ".join(f"{name}: {rule}" for name, rule in rules.items())
        log.info("testing at %d px; PE rules on the new grid: %s", size, described)
        scored = evaluate(ResizedSplit(split, size), f"{prefix}@{size}")
        metrics |= scored
    return metrics
