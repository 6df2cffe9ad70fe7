"""Starting from a local weights file saved with another PE: what loads, what is new."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from loope.models import build_model
from loope.models.checkpoint import load_checkpoint


def vit(pe: str, seed: int):
    torch.manual_seed(seed)
    return build_model("vit", "tiny", pe, img_size=16, patch_size=4, num_classes=3)


def test_another_pe_keeps_the_host_and_reports_the_pe_tensors(tmp_path: Path, caplog) -> None:
    path = tmp_path / "learnable.pt"
    source = vit("learnable", seed=1)
    torch.save({"model": source.state_dict(), "epoch": 3}, path)  # a trainer's wrapping
    target = vit("loope", seed=2)

    with caplog.at_level(logging.INFO, logger="loope.models.checkpoint"):
        report = load_checkpoint(target, path)

    assert set(report.dropped) == {"pe.patch (unknown)", "pe.cls (another PE)"}
    assert set(report.new) == {n for n in target.state_dict() if n.startswith("pe.")}
    assert "blocks.0.attn.qkv.weight" in report.loaded and "head.weight" in report.loaded
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert len(caplog.records) == 1 and "dropped: pe." in caplog.records[0].getMessage()


def test_a_tensor_of_another_shape_is_dropped_with_both_shapes(tmp_path: Path) -> None:
    path = tmp_path / "wide-head.pt"
    state = vit("none", seed=0).state_dict()
    state["head.weight"] = torch.zeros(5, state["head.weight"].shape[1])
    torch.save(state, path)
    target = vit("none", seed=1)
    report = load_checkpoint(target, path)
    assert report.dropped == ("head.weight (5x64 vs 3x64)",)
    assert report.new == ("head.weight",)
    assert not torch.equal(target.head.weight, torch.zeros_like(target.head.weight))


def test_the_same_pe_loads_whole(tmp_path: Path) -> None:
    path = tmp_path / "loope.pt"
    torch.save(vit("loope", seed=1).state_dict(), path)
    target = vit("loope", seed=2)
    report = load_checkpoint(target, path)
    assert report.new == () and report.dropped == ()
    assert len(report.loaded) == len(target.state_dict())


def test_a_missing_or_foreign_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.checkpoint: no file"):
        load_checkpoint(vit("none", 0), tmp_path / "absent.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="no mapping of names to tensors"):
        load_checkpoint(vit("none", 0), tmp_path / "list.pt")
