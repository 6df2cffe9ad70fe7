"""PESI of an image-conditioned PE on a probe set: per image, their mean, and X_C = 0.

For LOOPE the PE of a patch depends on the image, so its structure is a distribution over
images rather than one number. A fixed probe set makes the figure comparable between
checkpoints; the image-free value (X_C = 0, the Gilbert sinusoid) is reported next to it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from loope.pe.base import PositionalEmbedding, patch_embedding_grid
from loope.pesi import PESI, pesi


@dataclass(frozen=True)
class ProbePESI:
    """PESI per probe image, the mean over the probe set, and the image-free value."""

    per_image: list[PESI]
    mean: PESI
    zero_context: PESI

    def to_dict(self) -> dict[str, object]:
        return {
            "per_image": [p.to_dict() for p in self.per_image],
            "mean": self.mean.to_dict(),
            "zero_context": self.zero_context.to_dict(),
        }


def probe_pesi(pe: PositionalEmbedding, images: torch.Tensor, buckets: int = 60) -> ProbePESI:
    """PESI of an image-conditioned additive PE for each of `images` (B, C, H, W).

    The PE is evaluated in eval mode on the grid it was built for, so a BatchNorm in its
    context network uses its running statistics and each image's PE is its own. A float64
    copy is evaluated: PESI ranks similarities, and float32 rounding breaks their ties.
    """
    if not pe.info.image_conditioned:
        raise ValueError(f"{type(pe).__name__} does not look at the image; use pesi() instead")
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"images must be a non-empty (B, C, H, W) batch, got {tuple(images.shape)}"
        )
    h, w = pe.grid
    exact = copy.deepcopy(pe).double().eval()
    with torch.no_grad():
        patch = exact(pe.grid, images.double()).patch  # B, N, D
    zero = patch_embedding_grid(exact, pe.grid)  # h, w, D
    assert patch is not None
    grids = patch.reshape(len(images), h, w, pe.dim).double().numpy()  # B, h, w, D
    per_image = [pesi(grid, buckets) for grid in grids]
    mean = PESI(*(float(np.mean([getattr(p, name) for p in per_image])) for name in _FIELDS))
    return ProbePESI(per_image, mean, pesi(zero.double().numpy(), buckets))


_FIELDS = ("M_U", "M_D", "A_SU")
