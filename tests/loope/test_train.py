"""The trainer: exact resume, divergence, recipes, accumulation, clipping, mixed precision."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from loope.data import load_dataset
from loope.spec import ExperimentSpec, TrainSpec
from loope.train import CHECKPOINT_NAME, Trainer, batch_order, cosine_factor

Metrics = list[tuple[int, dict[str, float]]]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: faster on a shared CPU, and the same reductions every run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DIGITS = {"name": "digits", "fractions": (0.2, 0.1, 0.7)}  # 359 train images: 6 batches
THREE_CELL = {"name": "three-cell", "preset": "quick", "n": 300}


def make_spec(dataset: dict[str, Any], pe: str = "learnable", **train: Any) -> ExperimentSpec:
    recipe = {"epochs": 3, "batch_size": 64, "warmup_epochs": 1, "device": "cpu"} | train
    return ExperimentSpec.model_validate({"pe": {"name": pe}, "dataset": dataset, "train": recipe})


def run(
    spec: ExperimentSpec, workdir: Path | None, until: int | None = None
) -> tuple[Any, Metrics]:
    metrics: Metrics = []
    trainer = Trainer(spec, 3, workdir, lambda step, values: metrics.append((step, dict(values))))
    return trainer.fit(until_epoch=until), metrics


def parameters(workdir: Path) -> dict[str, torch.Tensor]:
    return torch.load(workdir / CHECKPOINT_NAME, weights_only=False)["model"]


RESUME_CASES = {
    "plain": (DIGITS, "learnable", {}),
    "augment+dropout": (
        DIGITS | {"augment": ("hflip", "rotate", "crop", "elastic", "brightness")},
        "learnable",
        {"dropout": 0.2, "label_smoothing": 0.1, "grad_clip": 1.0},
    ),
    "loope-batchnorm": (THREE_CELL | {"augment": ("brightness",)}, "loope", {"dropout": 0.1}),
    "fp16-scaler-accumulation": (
        THREE_CELL,
        "sinusoid-1d",
        {"precision": "fp16", "accumulation": 2},
    ),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_from_epoch_2_matches_an_uninterrupted_run(case: str, tmp_path: Path):
    dataset, pe, recipe = RESUME_CASES[case]
    spec = make_spec(dataset, pe, **recipe)
    straight, straight_metrics = run(spec, tmp_path / "straight")

    paused, _ = run(spec, tmp_path / "resumed", until=2)
    assert (paused.outcome, paused.epochs_done) == ("paused", 2)
    resumed, resumed_metrics = run(spec, tmp_path / "resumed")  # a fresh Trainer

    assert resumed.resumed_from_epoch == 2 and resumed.outcome == "succeeded"
    assert (resumed.epochs_done, resumed.step) == (straight.epochs_done, straight.step)
    epoch_3 = straight_metrics[-len(resumed_metrics) :]  # epoch 3's train, val and test points
    assert [step for step, _ in epoch_3] == [step for step, _ in resumed_metrics]
    for (_, expected), (_, actual) in zip(epoch_3, resumed_metrics, strict=True):
        assert expected.keys() == actual.keys()
        for key in expected:
            assert actual[key] == pytest.approx(expected[key], abs=1e-6, rel=0), key
    for name, value in parameters(tmp_path / "straight").items():
        torch.testing.assert_close(parameters(tmp_path / "resumed")[name], value, atol=1e-6, rtol=0)


def test_checkpoint_holds_everything_a_resume_needs(tmp_path: Path):
    spec = make_spec(THREE_CELL, "learnable", epochs=2, precision="fp16")
    run(spec, tmp_path, until=1)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    expected = {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "step", "seed"}
    assert expected <= state.keys()
    assert {"torch", "numpy", "python", "augment"} <= state["rng"].keys()
    assert state["scaler"]["scale"] > 0 and (state["epoch"], state["step"]) == (1, 4)


def test_a_checkpoint_of_another_seed_is_refused(tmp_path: Path):
    spec = make_spec(THREE_CELL, "none", epochs=2)
    run(spec, tmp_path, until=1)
    with pytest.raises(ValueError, match="not of this run"):
        Trainer(spec, 4, tmp_path).resume()


def test_a_nan_input_ends_the_run_as_diverged_at_its_step(tmp_path: Path):
    spec = make_spec(THREE_CELL, "learnable", epochs=2, batch_size=16)
    data = load_dataset(spec.dataset)
    images = data.train.images.float().div(255)
    poisoned = 100
    images[poisoned, 0, 0, 0] = math.nan
    data = type(data)(**{**data.__dict__, "train": type(data.train)(images, data.train.targets)})
    position = batch_order(len(data.train), 3, 0).tolist().index(poisoned)
    metrics: Metrics = []

    trainer = Trainer(spec, 3, tmp_path, lambda s, m: metrics.append((s, m)), data=data)
    result = trainer.fit()

    assert result.outcome == "diverged"
    assert result.diverged_at_step == position // 16 and result.epochs_done == 0
    assert metrics[-1][0] == position // 16 and math.isnan(metrics[-1][1]["train/loss"])
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_accumulating_two_batches_equals_one_double_batch():
    spec_double = make_spec(DIGITS, "learnable", epochs=1, batch_size=128, warmup_epochs=0)
    spec_halves = make_spec(
        DIGITS, "learnable", epochs=1, batch_size=64, accumulation=2, warmup_epochs=0
    )
    data = load_dataset(spec_double.dataset)
    keep = torch.arange(256)  # two double batches, four single ones
    data = type(data)(**{**data.__dict__, "train": data.train.subset(keep)})
    double = Trainer(spec_double, 0, data=data)
    halves = Trainer(spec_halves, 0, data=data)
    # both orders come from batch_order(256, 0, 0): each double batch is two single ones
    double._train_epoch()
    halves._train_epoch()
    assert double.step == halves.step == 2
    for a, b in zip(double.model.parameters(), halves.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_gradient_clipping_caps_the_norm_the_optimiser_sees():
    spec = make_spec(THREE_CELL, "learnable", epochs=1, grad_clip=0.01)
    trainer = Trainer(spec, 0)
    norms: list[float] = []

    def record(optimizer: torch.optim.Optimizer, *_: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    trainer.optimizer.register_step_pre_hook(record)
    trainer._train_epoch()
    assert len(norms) == trainer.steps_per_epoch
    assert max(norms) <= 0.01 + 1e-6


def test_bf16_autocast_runs_the_forward_pass_in_bf16_on_cpu():
    spec = make_spec(THREE_CELL, "loope", epochs=1, precision="bf16")
    trainer = Trainer(spec, 0)
    seen: set[torch.dtype] = set()
    trainer.model.head.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    result = trainer.fit()
    assert seen == {torch.bfloat16}
    assert result.outcome == "succeeded" and math.isfinite(result.test["test/loss"])
    assert not trainer.scaler.is_enabled()


def test_label_smoothing_matches_its_definition():
    trainer = Trainer(make_spec(THREE_CELL, "none", epochs=1, label_smoothing=0.2), 0)
    logits, targets = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor([[0.9, 0.1]])
    )
    torch.testing.assert_close(trainer.loss(logits, targets), expected)


def test_metric_keys_the_service_reads(tmp_path: Path):
    result, metrics = run(make_spec(THREE_CELL, "sinusoid-1d", epochs=1), None)
    keys = set().union(*(values.keys() for _, values in metrics))
    groups = ("distance", "orientation", "area", "vector_sum", "average")
    assert {"train/loss", "lr", "epoch", "val/acc", "test/acc"} <= keys
    assert {f"test/{g}" for g in groups} | {f"baseline/{g}" for g in groups} <= keys
    assert "baseline/positive_bit0" in keys and "data/train_size" in keys
    assert result.split.startswith("random 80/10/10 seed 0")


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    assert cosine_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert cosine_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert cosine_factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert cosine_factor(55, 100, 10, 0.1) == pytest.approx(0.55)
    assert cosine_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_recipes_fill_what_the_spec_leaves_out():
    paper = TrainSpec(recipe="paper-finetune")
    assert (paper.optimizer, paper.lr, paper.min_lr, paper.epochs) == ("adam", 1e-3, 2.5e-5, 150)
    scratch = TrainSpec.model_validate({"recipe": "scratch", "epochs": 300})
    assert (scratch.optimizer, scratch.weight_decay, scratch.warmup_epochs) == ("adamw", 0.05, 5)
    assert (scratch.batch_size, scratch.lr, scratch.epochs) == (1024, 5e-4, 300)
    assert TrainSpec(recipe="quick").epochs == 20


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"recipe": "fast"}, "train.recipe"),
        ({"epochs": 2, "warmup_epochs": 3}, "train.warmup_epochs"),
        ({"lr": 1e-4, "min_lr": 1e-3}, "train.min_lr"),
        ({"precision": "fp8"}, "precision"),
        ({"accumulation": 0}, "accumulation"),
    ],
)
def test_impossible_recipes_are_refused(train: dict[str, Any], message: str):
    with pytest.raises(ValidationError, match=message):
        TrainSpec.model_validate(train)
