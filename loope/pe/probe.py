"""PESI of an image-conditioned PE on a probe set: per image, their mean, and X_C = 0.

For LOOPE the PE of a patch depends on the image, so its structure is a distribution over
images rather than one number. A fixed probe set makes the figure comparable between
checkpoints; the image-free value (X_C = 0, the Gilbert sinusoid) is reported next to it.

The PE of a trained run is rebuilt from the run's spec and its training checkpoint
(`trained_model`); its probe set is drawn from the run's dataset spec (`probe_images`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from loope.data import load_dataset, three_cell, three_cell_config
from loope.models import build_model
from loope.models.checkpoint import load_safely
from loope.pe.base import PositionalEmbedding, patch_embedding_grid
from loope.pesi import PESI, pesi
from loope.spec import DatasetSpec, ExperimentSpec

log = logging.getLogger(__name__)

PROBE_SEED = 1_000_003
"""Seed of the probe set: far from the usual data seeds, so probe images are new images."""

PROBE_COUNT = 8


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
    return pesi_of_grids(*probe_grids(pe, images), buckets)


def pesi_of_grids(grids: np.ndarray, zero: np.ndarray, buckets: int = 60) -> ProbePESI:
    """PESI of each image's patch PEs `grids` (B, h, w, D), their mean, and of `zero`."""
    per_image = [pesi(grid, buckets) for grid in grids]
    mean = PESI(*(float(np.mean([getattr(p, name) for p in per_image])) for name in _FIELDS))
    return ProbePESI(per_image, mean, pesi(zero, buckets))


def probe_grids(pe: PositionalEmbedding, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The patch PEs of each image (B, h, w, D) and without an image (h, w, D), in float64.

    The PE is evaluated in eval mode, as a float64 copy, on the grid it was built for.
    """
    h, w = pe.grid
    exact = copy.deepcopy(pe).double().eval()
    with torch.no_grad():
        patch = exact(pe.grid, images.double()).patch  # B, N, D
    zero = patch_embedding_grid(exact, pe.grid)  # h, w, D
    assert patch is not None
    grids = patch.reshape(len(images), h, w, pe.dim).double().numpy()  # B, N, D -> B, h, w, D
    return grids, zero.double().numpy()


def probe_images(
    dataset: DatasetSpec, count: int = PROBE_COUNT, seed: int = PROBE_SEED
) -> torch.Tensor:
    """`count` images (B, C, H, W) of the run's data, as the model sees them.

    Three-Cell images are drawn afresh by the run's generator settings with `seed`, so they
    are deterministic and not training images. Other datasets give the first images of
    their test split, normalised as the trainer normalises them.
    """
    if count < 1:
        raise ValueError(f"count={count}: a probe set needs at least one image")
    if dataset.name == "three-cell":
        config = dataclasses.replace(three_cell_config(dataset), n=count, seed=seed)
        rendered = three_cell.generate(config).render_all()  # B, 3, H, W uint8
        return torch.from_numpy(rendered).float().div_(255)
    bundle = load_dataset(dataset)
    images, _ = bundle.test.take(slice(0, count))
    if bundle.mean_std is not None:
        mean, std = (torch.tensor(v)[:, None, None] for v in bundle.mean_std)
        images = (images - mean) / std
    return images


@dataclass(frozen=True)
class TrainedModel:
    """A run's model rebuilt from its spec with a checkpoint's weights, and when it was saved."""

    model: nn.Module
    epoch: int | None
    step: int | None


def trained_model(spec: ExperimentSpec, checkpoint: Path) -> TrainedModel:
    """The run's model on the CPU in eval mode, with the weights of its training checkpoint.

    The checkpoint must be the trainer's (`checkpoint.pt`) of this very spec. It is read
    without running any of its code: only tensors and numpy's random state are accepted.
    """
    state = _read_training_checkpoint(checkpoint)
    if state.get("spec_hash") != spec.spec_hash():
        raise ValueError(
            f"{checkpoint}: checkpoint of spec {str(state.get('spec_hash'))[:12]}, "
            f"not of this run's spec {spec.spec_hash()[:12]}"
        )
    img_size, in_chans, natural_patch, num_outputs = _data_shape(spec.dataset)
    model = build_model(
        spec.model.arch,
        spec.model.size,
        spec.pe.name,
        img_size=img_size,
        patch_size=spec.model.patch_size or natural_patch,
        num_classes=num_outputs,
        in_chans=in_chans,
        pe_options=spec.pe.build_options(),
    )
    model.load_state_dict(state["model"])
    epoch, step = state.get("epoch"), state.get("step")
    log.info("rebuilt %s from %s (epoch %s)", spec.pe.name, checkpoint, epoch)
    return TrainedModel(model.eval(), epoch, step)  # type: ignore[arg-type]


def _read_training_checkpoint(path: Path) -> dict[str, object]:
    """The trainer's checkpoint dictionary, unpickled with only tensors and numpy allowed."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    state = load_safely(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{path} is not a training checkpoint (no 'model' weights)")
    return state


def _data_shape(dataset: DatasetSpec) -> tuple[int, int, int, int]:
    """(image size, channels, natural patch, outputs) of the dataset, as the trainer sees it.

    Three-Cell's come from its generator settings without drawing the set.
    """
    if dataset.name == "three-cell":
        config = three_cell_config(dataset)
        return config.image_size, 3, config.cell, 6
    bundle = load_dataset(dataset)
    return bundle.img_size, bundle.in_chans, bundle.natural_patch, bundle.num_outputs


_FIELDS = ("M_U", "M_D", "A_SU")
