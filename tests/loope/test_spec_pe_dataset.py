"""Spec errors that used to surface only on a worker: unknown PE options, unknown presets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loope.pe import PE_REGISTRY
from loope.spec import DatasetSpec, PESpec, pe_options


@pytest.mark.parametrize("name", list(PE_REGISTRY))
def test_an_unknown_pe_option_is_refused_naming_the_allowed_ones(name: str) -> None:
    with pytest.raises(ValidationError, match=rf"pe.options: {name} takes no option 'foo'"):
        PESpec(name=name, options={"foo": 1})


def test_the_options_of_a_pe_are_its_constructor_s_own() -> None:
    assert pe_options("loope") == (
        "in_channels", "base", "activation", "squash", "linear_bias", "norm", "coords",
    )  # fmt: skip
    assert pe_options("hilbert-pe") == ("base",), "its order is pinned"
    assert PESpec(name="loope", options={"norm": "layer"}).options == {"norm": "layer"}


def test_an_unknown_three_cell_preset_is_refused_at_once() -> None:
    with pytest.raises(ValidationError, match="unknown Three-Cell preset 'quik'; allowed: paper"):
        DatasetSpec(name="three-cell", preset="quik")
    assert DatasetSpec(name="three-cell", preset="paper").preset == "paper"
