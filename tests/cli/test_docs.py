"""The committed spec reference is what the generator writes from the models today."""

from __future__ import annotations

from loope.cli.docs import REFERENCE, main, render
from loope.pe import PE_REGISTRY
from loope.spec import DatasetSpec, TrainSpec


def test_committed_spec_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == render(), "run: python -m loope.cli.docs"
    assert main(["--check"]) == 0


def test_reference_names_every_field_and_pe() -> None:
    text = render()
    for model in (DatasetSpec, TrainSpec):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, name
    for name in PE_REGISTRY:
        assert f"| `{name}` |" in text, name


def test_check_fails_on_a_stale_file(tmp_path) -> None:
    stale = tmp_path / "spec-reference.md"
    stale.write_text(render().replace("`lr`", "`learning_rate`"))
    assert main(["--check", "--output", str(stale)]) == 1
