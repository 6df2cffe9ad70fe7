"""`loope doctor`: the (family x PE) matrix, unsupported pairs and a failing pair's exit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import loope.models
from loope.cli import app

runner = CliRunner()
SUBSET = ["--arch", "vit", "--arch", "swin", "--pe", "learnable", "--pe", "rope-axial"]


def test_json_lists_every_chosen_pair_with_its_outcome() -> None:
    result = runner.invoke(app, ["doctor", *SUBSET, "--json"])
    assert result.exit_code == 0, result.output
    pairs = {(p["arch"], p["pe"]): p for p in json.loads(result.stdout)["pairs"]}
    assert set(pairs) == {(a, p) for a in ("vit", "swin") for p in ("learnable", "rope-axial")}
    assert pairs["swin", "learnable"]["outcome"] == "unsupported"
    assert "swin cannot host additive PEs" in pairs["swin", "learnable"]["error"]
    for pair in [("vit", "learnable"), ("vit", "rope-axial"), ("swin", "rope-axial")]:
        assert pairs[pair]["outcome"] == "ok" and pairs[pair]["step_ms"] > 0


def test_a_failing_pair_is_shown_with_its_error_and_exits_1(monkeypatch) -> None:
    real = loope.models.build_model

    def broken(arch: str, size: str, pe: str, **kwargs):
        if pe == "rope-axial":
            raise RuntimeError("kernel missing")
        return real(arch, size, pe, **kwargs)

    monkeypatch.setattr(loope.models, "build_model", broken)
    result = runner.invoke(app, ["doctor", "--arch", "vit", "--pe", "none", "--pe", "rope-axial"])
    assert result.exit_code == 1
    assert "FAILED vit x rope-axial: RuntimeError: kernel missing" in result.stdout
    assert "1 ok, 1 failed, 0 unsupported" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--arch", "resnet"], "unknown resnet"), (["--device", "tpu"], "choose cpu or cuda")],
)
def test_bad_choices_are_refused(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["doctor", *args])
    assert result.exit_code == 2 and message in result.output
