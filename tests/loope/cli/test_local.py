"""`loope three-cell` and `loope train`, run through the real command-line app."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from loope.cli import app
from loope.data.three_cell import BIT_KEYS, GROUPS, ThreeCellConfig, generate, label_stats

runner = CliRunner()


def test_three_cell_stats_json_gives_positive_and_majority_rates_per_bit_and_group():
    result = runner.invoke(app, ["three-cell", "--n", "400", "--seed", "3", "--grid", "6",
                                 "--cell", "2", "--stats", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    expected = label_stats(generate(ThreeCellConfig(grid=6, cell=2, n=400, seed=3)).labels)
    assert stats["positive"] == pytest.approx(expected["positive"])
    assert stats["majority"] == pytest.approx(expected["majority"])
    assert set(stats["positive"]) == set(BIT_KEYS) | set(GROUPS)
    assert set(stats["majority"]) == set(BIT_KEYS) | set(GROUPS) | {"average"}
    assert stats["config"]["grid"] == 6 and stats["config"]["seed"] == 3


def test_three_cell_exposes_every_generator_choice():
    args = ["three-cell", "--n", "300", "--grid", "5", "--max-sq-len", "4",
            "--vector-sum-rule", "either", "--allow-collinear", "--json"]  # fmt: skip
    config = json.loads(runner.invoke(app, args).output)["config"]
    assert config["max_sq_len"] == 4 and config["vector_sum_rule"] == "either"
    assert config["reject_collinear"] is False


def test_three_cell_refuses_a_bad_grid():
    result = runner.invoke(app, ["three-cell", "--grid", "2", "--stats"])
    assert result.exit_code != 0 and "grid=2" in result.output


def test_three_cell_save_writes_pngs_and_labels_csv(tmp_path: Path):
    result = runner.invoke(app, ["three-cell", "--n", "12", "--seed", "1", "--save", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "labels.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["file", *BIT_KEYS] and len(rows) == 13
    labels = generate(ThreeCellConfig(grid=8, cell=4, n=12, seed=1)).labels
    assert [[int(b) for b in row[1:]] for row in rows[1:]] == labels.tolist()
    image = Image.open(tmp_path / rows[1][0])
    assert image.size == (32, 32) and image.mode == "RGB"


def write_spec(path: Path, **train: object) -> Path:
    body = {
        "pe": {"name": "sinusoid-1d"},
        "dataset": {"name": "three-cell", "preset": "quick", "n": 100},
        "train": {"epochs": 2, "batch_size": 32, "device": "cpu"} | train,
    }
    path.write_text(yaml.safe_dump(body))
    return path


def test_train_runs_a_spec_and_resumes_from_its_workdir(tmp_path: Path):
    spec = write_spec(tmp_path / "spec.yaml")
    workdir = tmp_path / "run"
    first = runner.invoke(app, ["train", str(spec), "--seed", "2", "--workdir", str(workdir)])
    assert first.exit_code == 0, first.output
    assert "succeeded after 2 epochs (6 steps)" in first.output
    assert "split: random 80/10/10 seed 0" in first.output
    test = json.loads(first.output[first.output.index("{") :])
    assert {"test/acc", "test/average"} <= test.keys()

    again = runner.invoke(app, ["train", str(spec), "--seed", "2", "--workdir", str(workdir)])
    assert again.exit_code == 0 and "resumed after epoch 2" in again.output


def test_train_reports_an_invalid_spec_by_its_field(tmp_path: Path):
    spec = write_spec(tmp_path / "spec.yaml", precision="fp8")
    result = runner.invoke(app, ["train", str(spec)])
    assert result.exit_code == 1 and "train.precision" in result.output


def test_train_reports_a_missing_dataset_path(tmp_path: Path):
    body = {"pe": {"name": "none"}, "dataset": {"name": "cifar10", "path": str(tmp_path / "x")}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(body))
    result = runner.invoke(app, ["train", str(tmp_path / "spec.yaml")])
    assert result.exit_code == 1 and "dataset.path" in result.output
