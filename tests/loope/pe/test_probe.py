"""PESI of LOOPE on a probe set: per image, mean, and the image-free value."""

from __future__ import annotations

import math

import pytest
import torch

from loope.pe import build_pe, patch_embedding_grid
from loope.pe.probe import probe_pesi
from loope.pesi import pesi

GRID = (4, 6)
PATCH = 4


def make_loope() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_pe("loope", dim=32, grid=GRID, patch_size=PATCH, norm="layer")


def probe_images(count: int = 3) -> torch.Tensor:
    return torch.rand(
        count, 3, GRID[0] * PATCH, GRID[1] * PATCH, generator=torch.Generator().manual_seed(1)
    )


def test_zero_context_is_the_image_free_pesi() -> None:
    pe = make_loope()
    result = probe_pesi(pe, probe_images(), buckets=12)
    expected = pesi(patch_embedding_grid(pe, GRID).double().numpy(), 12)
    assert result.zero_context == expected


def test_with_a_zeroed_context_network_every_image_gets_the_image_free_value() -> None:
    pe = make_loope()
    with torch.no_grad():
        pe.context.linear.weight.zero_()
    result = probe_pesi(pe, probe_images(), buckets=12)
    for value in result.per_image:
        for name in ("M_U", "M_D", "A_SU"):
            assert getattr(value, name) == pytest.approx(
                getattr(result.zero_context, name), abs=1e-9
            )


def test_images_get_their_own_pesi_and_the_mean_is_their_average() -> None:
    pe = make_loope()
    with torch.no_grad():
        pe.context.linear.weight.normal_(0, 5.0)  # a context bias large enough to reorder
    result = probe_pesi(pe, probe_images(4), buckets=12)
    assert len(result.per_image) == 4
    assert len({p.M_D for p in result.per_image}) > 1
    average = sum(p.M_U for p in result.per_image) / 4
    assert math.isclose(result.mean.M_U, average, rel_tol=1e-12)


def test_a_pe_that_does_not_look_at_images_is_refused() -> None:
    pe = build_pe("sinusoid-1d", dim=32, grid=GRID, patch_size=PATCH)
    with pytest.raises(ValueError, match="does not look at the image"):
        probe_pesi(pe, probe_images())
