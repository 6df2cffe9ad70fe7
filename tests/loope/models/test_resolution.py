"""A model trained at one size tested at others, each PE with its declared grid rule."""

from __future__ import annotations

import pytest
import torch

from loope.data import Split
from loope.models import build_model
from loope.models.resolution import ResizedSplit, evaluate_at_sizes, grid_rules
from loope.spec import ExperimentSpec, ModelSpec
from loope.train import Trainer


def test_resized_split_hands_out_resized_images_in_range() -> None:
    split = Split(torch.rand(5, 1, 8, 8), torch.arange(5))
    images, targets = ResizedSplit(split, 12).take(slice(0, 3))
    assert images.shape == (3, 1, 12, 12) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(targets, torch.arange(3))


def test_metrics_per_size_and_the_rules_each_pe_applies() -> None:
    model = build_model("crossvit", "tiny", "loope", img_size=16, patch_size=4, num_classes=3)
    assert grid_rules(model) == {"pe.0": "zero-context", "pe.1": "zero-context"}
    split = Split(torch.rand(4, 3, 16, 16), torch.arange(4) % 3)
    seen = []

    def evaluate(part: Split, prefix: str) -> dict[str, float]:
        images, _ = part.take(slice(0, 4))
        seen.append(images.shape[-1])
        with torch.no_grad():
            assert torch.isfinite(model.eval()(images)).all()
        return {f"{prefix}/acc": 1.0}

    metrics = evaluate_at_sizes(model, split, (24, 32), evaluate)
    assert metrics == {"test@24/acc": 1.0, "test@32/acc": 1.0} and seen == [24, 32]


def test_the_trainer_reports_accuracy_per_eval_size() -> None:
    spec = ExperimentSpec(
        model=ModelSpec(arch="vit", size="tiny", patch_size=4, eval_image_sizes=(12, 16)),
        pe={"name": "learnable"},
        dataset={"name": "digits", "fractions": (0.5, 0.25, 0.25)},
        train={"epochs": 1, "batch_size": 128, "device": "cpu"},
    )
    reported: dict[str, float] = {}
    result = Trainer(spec, seed=0, on_metrics=lambda step, m: reported.update(m)).fit()
    for size in (12, 16):
        assert 0 <= result.test[f"test@{size}/acc"] <= 100
        assert f"test@{size}/loss" in reported
    assert "test/acc" in result.test


def test_eval_sizes_must_fit_the_patch() -> None:
    with pytest.raises(ValueError, match="patch_size=16 must divide 100"):
        ModelSpec(patch_size=16, eval_image_sizes=(100,))
