"""Every file in examples/ is a valid spec or sweep, so the examples cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.schemas import SubmitSweep
from loope.spec import ExperimentSpec, load_spec_file
from service.sweeps import expand

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FILES = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
DEMO_PES = {"none", "learnable", "sinusoid-1d", "sinusoid-2d", "hilbert-pe", "loope", "rpe",
            "rope-axial"}  # fmt: skip


def test_there_are_examples() -> None:
    names = {p.name for p in FILES}
    wanted = {
        "three_cell_quick.yaml", "three_cell_paper.yaml", "cifar100_table.yaml",
        "oxford_pet_paper.yaml", "digits_sweep.yaml", "resolution_extrapolation.yaml",
    }  # fmt: skip
    assert wanted <= names


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_is_a_valid_spec_or_sweep(path: Path) -> None:
    body = load_spec_file(path)
    if "base" not in body:
        ExperimentSpec.model_validate(body)
        return
    sweep = SubmitSweep.model_validate(body)
    requests = expand(sweep.base, sweep.axes, sweep.seeds)
    cells = 1
    for values in sweep.axes.values():
        cells *= len(values)
    assert len(requests) == cells * len(sweep.seeds)


def test_the_demo_sweep_compares_the_required_pes_with_two_seeds() -> None:
    sweep = SubmitSweep.model_validate(load_spec_file(EXAMPLES / "three_cell_quick.yaml"))
    assert set(sweep.axes["pe.name"]) >= DEMO_PES
    assert len(sweep.seeds) >= 2
    assert sweep.base.get("resources", {}).get("gpus", 0) == 0, "the demo runs on CPUs"


def test_the_full_demo_sweep_runs_every_catalogue_pe_with_three_seeds() -> None:
    from loope.pe import PE_REGISTRY

    sweep = SubmitSweep.model_validate(load_spec_file(EXAMPLES / "three_cell_full.yaml"))
    assert set(sweep.axes["pe.name"]) == set(PE_REGISTRY)
    assert len(sweep.seeds) == 3
