"""Train / validation / test splits drawn from one seed, and the in-memory form they take."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    """Images (n, C, H, W) and targets: (n, K) float32 multi-label or (n,) int64 classes.

    Images are float32 in [0, 1], or uint8 (0..255) for large sets; :meth:`take` always
    hands back float32 in [0, 1].
    """

    images: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.images) != len(self.targets):
            raise ValueError(f"{len(self.images)} images but {len(self.targets)} targets")
        if self.images.ndim != 4:
            raise ValueError(f"images shape {tuple(self.images.shape)}: must be (n, C, H, W)")

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """The images (float32 in [0, 1]) and targets at `index`."""
        images = self.images[index]
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        return images, self.targets[index]

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.targets[index])


def random_parts(n: int, fractions: tuple[float, float, float], seed: int) -> list[torch.Tensor]:
    """Indices of the train, val and test parts of `n` samples, shuffled by `seed`."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
    return [order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]]


def split_random(
    everything: Split, fractions: tuple[float, float, float], seed: int
) -> tuple[Split, Split, Split]:
    """The paper's split: one seeded shuffle, cut in `fractions` (80/10/10)."""
    train, val, test = random_parts(len(everything), fractions, seed)
    return everything.subset(train), everything.subset(val), everything.subset(test)


def split_official(
    train: Split, test: Split, val_fraction: float, seed: int
) -> tuple[Split, Split, Split]:
    """The dataset's own test split; `val_fraction` of its training part becomes validation."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_val = round(val_fraction * len(train))
    return train.subset(order[n_val:]), train.subset(order[:n_val]), test
