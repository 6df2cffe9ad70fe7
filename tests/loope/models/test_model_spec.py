"""The model part of a spec: families, their sizes, a local checkpoint, eval image sizes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loope.models import FAMILIES, build_model, supports
from loope.spec import ModelSpec


@pytest.mark.parametrize(
    ("arch", "size"), [(arch, size) for arch, family in FAMILIES.items() for size in family.sizes]
)
def test_every_family_size_is_a_valid_spec(arch: str, size: str) -> None:
    assert ModelSpec(arch=arch, size=size).size == size


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"arch": "cait", "size": "base"}, "cait comes in tiny, s24, not 'base'"),
        ({"arch": "crossvit", "size": "small"}, "crossvit comes in tiny, base"),
        ({"checkpoint": "https://example.org/vit.pth"}, "nothing is downloaded"),
        ({"eval_image_sizes": (2,)}, "2 is outside 4..4096"),
    ],
)
def test_impossible_model_specs_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelSpec(**fields)


def test_build_model_refuses_what_the_family_declares_unsupported() -> None:
    assert supports("swin", "rpe") is None
    assert "swin cannot host conditional PEs" in supports("swin", "cpvt")
    with pytest.raises(ValueError, match="swin cannot host additive PEs"):
        build_model("swin", "tiny", "loope", img_size=32, patch_size=4, num_classes=2)


def test_crossvit_patches_must_give_a_whole_large_patch() -> None:
    with pytest.raises(ValueError, match="must be whole"):
        build_model("crossvit", "base", "none", img_size=240, patch_size=10, num_classes=2)
