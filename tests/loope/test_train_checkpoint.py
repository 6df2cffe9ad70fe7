"""A spec's `model.checkpoint` gives the trainer its starting weights, PE tensors aside."""

from __future__ import annotations

from pathlib import Path

import torch

from loope.spec import ExperimentSpec
from loope.train import CHECKPOINT_NAME, Trainer

DIGITS = {"name": "digits", "fractions": (0.2, 0.1, 0.7)}


def spec(pe: str, checkpoint: Path | None = None) -> ExperimentSpec:
    model = {"checkpoint": str(checkpoint)} if checkpoint else {}
    body = {"pe": {"name": pe}, "dataset": DIGITS, "model": model, "train": {"device": "cpu"}}
    return ExperimentSpec.model_validate(body)


def test_the_trainer_starts_from_the_named_checkpoint_with_its_own_pe(tmp_path: Path) -> None:
    source = Trainer(spec("learnable"), seed=1).model
    weights = tmp_path / "weights.pt"
    torch.save(source.state_dict(), weights)

    started = Trainer(spec("sinusoid-1d", weights), seed=2).model
    fresh = Trainer(spec("sinusoid-1d"), seed=2).model

    own = started.state_dict()
    assert torch.equal(
        own["blocks.0.attn.qkv.weight"], source.state_dict()["blocks.0.attn.qkv.weight"]
    )
    assert not torch.equal(
        own["blocks.0.attn.qkv.weight"], fresh.state_dict()["blocks.0.attn.qkv.weight"]
    )
    assert not any(name.startswith("pe.") and name in source.state_dict() for name in own)


def test_pe_tensors_of_another_pe_are_not_loaded_even_when_shapes_fit(tmp_path: Path) -> None:
    source = Trainer(spec("learnable"), seed=1).model
    with torch.no_grad():
        source.pe.cls.fill_(0.5)  # learnable's class row: same shape as LOOPE's class vector
    weights = tmp_path / "weights.pt"
    torch.save(source.state_dict(), weights)

    started = Trainer(spec("loope", weights), seed=2).model

    assert started.pe.cls.shape == source.pe.cls.shape
    assert torch.count_nonzero(started.pe.cls) == 0  # LOOPE's zero init, not the 0.5 row
    assert torch.equal(started.blocks[0].mlp.fc1.weight, source.blocks[0].mlp.fc1.weight)


def test_a_run_starts_from_another_runs_training_checkpoint(tmp_path: Path) -> None:
    """The trainer's own checkpoint.pt (weights beside optimiser and random states) loads."""
    body = spec("learnable").model_dump() | {"train": {"device": "cpu", "epochs": 1}}
    first = Trainer(ExperimentSpec.model_validate(body), seed=1, workdir=tmp_path / "first")
    first.fit()
    checkpoint = tmp_path / "first" / CHECKPOINT_NAME

    started = Trainer(spec("learnable", checkpoint), seed=2).model

    assert torch.equal(started.pe.patch, first.model.pe.patch)
    assert torch.equal(started.head.weight, first.model.head.weight)
