"""`loope train`: a refused spec, option or device is one `error:` line and exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from loope.cli import local  # noqa: F401  (registers the commands)
from loope.cli.app import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def digits_spec(tmp_path: Path, **changes: dict) -> Path:
    """examples/digits.yaml with top-level sections replaced, written to tmp_path."""
    body = yaml.safe_load((EXAMPLES / "digits.yaml").read_text()) | changes
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_an_unknown_pe_option_is_one_line_naming_the_field(tmp_path: Path) -> None:
    path = digits_spec(tmp_path, pe={"name": "loope", "options": {"foo": 1}})
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith(f"error: {path}: pe.options: loope takes no option 'foo'; its options: ")
    ), result.output


def test_a_pe_option_of_a_wrong_type_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path,
) -> None:
    path = digits_spec(tmp_path, pe={"name": "loope", "options": {"base": "abc"}})
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    [line] = error_lines(result.output)
    assert "unsupported operand type" in line and "Traceback" not in result.output
    debug = runner.invoke(app, ["train", str(path)], env={"LOOPE_DEBUG": "1"})
    assert isinstance(debug.exception, TypeError), debug.output
    flag = runner.invoke(app, ["train", str(path), "--debug"])
    assert isinstance(flag.exception, TypeError), flag.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(tmp_path: Path) -> None:
    path = digits_spec(tmp_path, train={"recipe": "quick", "device": "cuda"})
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    [line] = error_lines(result.output)
    assert "train.device='cuda' but no CUDA device is visible" in line


def test_a_sweep_file_is_pointed_to_loope_sweep() -> None:
    path = EXAMPLES / "digits_sweep.yaml"
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"error: {path} is a sweep file (it has base/axes); use `loope sweep`"
    ]


def test_a_yaml_syntax_error_is_one_line_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: {arch: vit\n  pe: [1,\n")
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: {path}: line 2, column 5: ")


def test_pe_map_refuses_an_output_that_is_not_a_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loope.cli import pe_tools  # noqa: F401  (registers the command)

    monkeypatch.chdir(tmp_path)  # short names keep the error box on one line
    for out in ("map.txt", "map"):
        result = runner.invoke(app, ["pe-map", "--pe", "learnable", "--cell", "0,0", "--grid",
                                     "4x4", "--out", out])  # fmt: skip
        assert result.exit_code == 2 and "name a .png file" in result.output, result.output
        assert not result.exception or isinstance(result.exception, SystemExit)
        assert list(tmp_path.iterdir()) == []


def test_three_cell_prints_statistics_by_default_and_refuses_a_file_as_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = runner.invoke(app, ["three-cell", "--n", "20"])
    assert result.exit_code == 0 and "majority:" in result.output, result.output
    monkeypatch.chdir(tmp_path)
    taken = Path("a-file")
    taken.write_text("keep me")
    result = runner.invoke(app, ["three-cell", "--n", "5", "--save", str(taken)])
    assert result.exit_code == 2 and "is a file; name a folder" in result.output, result.output
    assert taken.read_text() == "keep me"
