"""Batch augmentations: what each one does, and that one generator seed fixes them all."""

from __future__ import annotations

import pytest
import torch

from loope.data.augment import TRANSFORMS, Augmenter, brightness, crop, hflip, rotate


def images(batch: int = 8, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_augmentation_keeps_shape_and_range_and_is_seeded(name: str):
    batch = images()
    first = TRANSFORMS[name](batch, torch.Generator().manual_seed(1))
    again = TRANSFORMS[name](batch, torch.Generator().manual_seed(1))
    other = TRANSFORMS[name](batch, torch.Generator().manual_seed(2))
    assert first.shape == batch.shape and first.dtype == batch.dtype
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= -1e-6 and first.max() <= 1 + 1e-6
    assert not torch.equal(first, batch)


def test_hflip_flips_a_random_half_exactly():
    batch = images(batch=64)
    out = hflip(batch, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, b.flip(-1)) for o, b in zip(out, batch, strict=True)]
    kept = [torch.equal(o, b) for o, b in zip(out, batch, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48


def test_brightness_scales_pixels_in_place_without_moving_them():
    batch = torch.zeros(4, 3, 8, 8)
    batch[:, 0, 2, 5] = 0.5
    out = brightness(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out != 0, batch != 0)
    assert ((out[:, 0, 2, 5] >= 0.4) & (out[:, 0, 2, 5] <= 0.6)).all()


def test_crop_shifts_by_whole_pixels():
    batch = torch.zeros(16, 1, 16, 16)
    batch[:, 0, 8, 8] = 1.0
    out = crop(batch, torch.Generator().manual_seed(0))
    for image in out:
        assert image.sum().item() == pytest.approx(1.0, abs=1e-5)  # the dot moved, intact
        row, col = divmod(int(image.argmax()), 16)
        assert abs(row - 8) <= 2 and abs(col - 8) <= 2


def test_rotate_keeps_the_centre():
    batch = torch.zeros(8, 1, 15, 15)
    batch[:, 0, 7, 7] = 1.0
    out = rotate(batch, torch.Generator().manual_seed(0))
    assert (out[:, 0, 7, 7] > 0.5).all()


def test_augmenter_applies_names_in_order_from_its_own_generator():
    batch = images()
    augmenter = Augmenter(("hflip", "brightness"), seed=3)
    generator = torch.Generator().manual_seed(3)
    expected = brightness(hflip(batch, generator), generator)
    assert torch.equal(augmenter(batch), expected)
    state = augmenter.generator.get_state()
    later = augmenter(batch)
    augmenter.generator.set_state(state)
    assert torch.equal(augmenter(batch), later)
    assert not Augmenter((), seed=0)
