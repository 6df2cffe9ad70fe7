"""The resources part of a spec: GPU shares, whole GPUs, data-parallel workers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loope.spec import ResourceSpec


@pytest.mark.parametrize(
    "fields",
    [{"gpus": 0.5}, {"gpus": 2}, {"gpus": 1, "workers": 4}, {"gpus": 0, "workers": 2}],
)
def test_possible_resources_are_accepted(fields: dict) -> None:
    assert ResourceSpec(**fields).model_dump(include=set(fields)) == fields


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"gpus": 1.5}, r"resources.gpus=1.5: above 1 a run takes whole GPUs"),
        ({"gpus": 0.5, "workers": 2}, r"resources.gpus=0.5 with workers=2: .* own"),
        ({"workers": 0}, "workers"),
    ],
)
def test_impossible_resources_name_the_field_and_rule(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ResourceSpec(**fields)
