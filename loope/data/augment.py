"""The paper's training augmentations, applied to a whole batch with one seeded generator.

Every random draw comes from the `torch.Generator` handed in, so the trainer can save and
restore its state and a resumed run sees the same augmented batches as an uninterrupted one.

Letters: B batch, C channels, H and W image height and width.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from loope.spec import Augmentation

MAX_ROTATION_DEGREES = 15.0
"""Rotations are uniform in ±this. NOTE: the paper names rotations without a range."""
BRIGHTNESS_RANGE = (0.8, 1.2)
"""Brightness multiplies every pixel by a factor uniform in this range."""
ELASTIC_ALPHA = 0.06
"""Largest elastic displacement, as a fraction of the image side (normalised units / 2)."""
ELASTIC_CONTROL = 4
"""The elastic displacement is drawn on a CONTROL×CONTROL grid and smoothly upsampled."""
MAX_SHIFT_FRACTION = 0.125
"""`crop` shifts the image by up to this fraction of its side (pad-and-crop, zero fill)."""

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float):
    return torch.rand(shape, generator=generator) * (high - low) + low


def _coin(generator: torch.Generator, batch: int) -> torch.Tensor:
    return torch.rand(batch, generator=generator) < 0.5


def hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = _coin(generator, len(images)).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def vflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = _coin(generator, len(images)).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-2), images)


def brightness(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    factor = _uniform(generator, (len(images), 1, 1, 1), *BRIGHTNESS_RANGE).to(images.device)
    return (images * factor).clamp_(0, 1)


def _affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample `images` through the B×2×3 affine maps `theta` (normalised coordinates)."""
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)  # B, H, W, 2
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


def rotate(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    limit = math.radians(MAX_ROTATION_DEGREES)
    angle = _uniform(generator, (len(images),), -limit, limit)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(-1, 2, 3)  # B, 2, 3
    return _affine(images, theta)


def crop(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random crop of the zero-padded image, i.e. a shift by whole pixels."""
    B, _, H, W = images.shape
    limit = max(1, round(MAX_SHIFT_FRACTION * min(H, W)))
    shift = torch.randint(-limit, limit + 1, (B, 2), generator=generator)  # B, (dy, dx) pixels
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).repeat(B, 1, 1)  # B, 2, 3
    eye[:, 0, 2] = 2 * shift[:, 1] / W
    eye[:, 1, 2] = 2 * shift[:, 0] / H
    return _affine(images, eye)


def elastic(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A smooth random displacement field: coarse uniform noise, bicubically upsampled."""
    B, _, H, W = images.shape
    coarse = _uniform(generator, (B, 2, ELASTIC_CONTROL, ELASTIC_CONTROL), -1, 1)
    field = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True)  # B, 2, H, W
    identity = torch.eye(2, 3).repeat(B, 1, 1)
    grid = F.affine_grid(identity, [B, 1, H, W], align_corners=False)  # B, H, W, 2
    grid = grid + 2 * ELASTIC_ALPHA * field.permute(0, 2, 3, 1)  # B, H, W, 2
    return F.grid_sample(images, grid.to(images), padding_mode="border", align_corners=False)


TRANSFORMS: dict[Augmentation, Transform] = {
    "hflip": hflip,
    "vflip": vflip,
    "rotate": rotate,
    "crop": crop,
    "elastic": elastic,
    "brightness": brightness,
}


class Augmenter:
    """The spec's augmentations, applied in the order listed, drawing from one generator."""

    def __init__(self, names: tuple[Augmentation, ...], seed: int) -> None:
        unknown = [name for name in names if name not in TRANSFORMS]
        if unknown:
            raise ValueError(
                f"dataset.augment: unknown {unknown}; allowed: {', '.join(TRANSFORMS)}"
            )
        self.names = names
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            images = TRANSFORMS[name](images, self.generator)
        return images

    def __bool__(self) -> bool:
        return bool(self.names)
