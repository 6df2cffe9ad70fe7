"""The `order`, `pesi` and `pe-map` commands: outputs, the paper's PESI table, clear errors."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import loope.cli.pe_tools as pe_tools
from loope.cli.app import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_order_prints_the_rank_grid() -> None:
    result = run("order", "raster", "--grid", "2x3")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["0 1 2", "3 4 5"]


def test_order_json_starts_the_gilbert_curve_as_specified() -> None:
    result = run("order", "gilbert", "--grid", "14x14", "--json")
    payload = json.loads(result.stdout)
    rank = payload["rank"]
    assert payload["grid"] == [14, 14] and len(rank) == 14 and len(rank[0]) == 14
    path = [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0), (3, 0), (3, 1), (2, 1)]
    assert [rank[r][c] for r, c in path] == list(range(8))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("order", "hilbert", "--grid", "3x5"), "2^k x 2^k"),
        (("order", "spiral"), "unknown order 'spiral'"),
        (("pesi", "--pe", "sinusoid-1d", "--grid", "3y3"), "ROWSxCOLS"),
        (("pesi", "--pe", "rope-axial", "--dim", "64"), "no embedding per patch"),
        (("pesi", "--pe", "rpe", "--dim", "64"), "no embedding per patch"),
        (("pesi", "--pe", "cpvt", "--dim", "64"), "no embedding per patch"),
        (("pesi", "--pe", "hilbert-pe", "--order", "raster"), "takes no order"),
        (("pesi", "--pe", "sinusoid-2d", "--dim", "18"), "divisible by 4"),
        (("pesi", "--pe", "nope"), "unknown PE 'nope'"),
        (
            ("pe-map", "--pe", "sinusoid-2d", "--cell", "9,0", "--grid", "4x4", "--out", "x.png"),
            "outside the 4x4 grid",
        ),
        (("pe-map", "--pe", "sinusoid-2d", "--out", "x.png"), "exactly one of --cell"),
    ],
)
def test_errors_are_one_clear_message_and_exit_code_2(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("pe", "expected"),
    [
        ("sinusoid-1d", {"M_U": 1.9567, "M_D": 1.4905, "A_SU": 0.1243}),  # paper, 1-D sinusoid
        ("hilbert-pe", {"M_U": 1.9674, "M_D": 1.2900, "A_SU": 0.0939}),
        ("loope", {"M_U": 1.9674, "M_D": 1.2900, "A_SU": 0.0939}),  # paper's LOOPE row
    ],
)
def test_pesi_reproduces_the_papers_table(pe: str, expected: dict[str, float]) -> None:
    args = ("pesi", "--pe", pe, "--grid", "14x14", "--dim", "768", "--buckets", "60", "--json")
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected
    assert ("X_C = 0" in result.stderr) == (pe == "loope")


def test_pesi_of_a_learnable_pe_says_it_is_untrained() -> None:
    result = run("pesi", "--pe", "fourier", "--grid", "5x7", "--dim", "32")
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["M_U", "M_D", "A_SU"]
    assert "freshly initialised" in result.stderr


@pytest.mark.parametrize("where", [("--cell", "1,2"), ("--cells", "all")])
def test_pe_map_writes_a_png(tmp_path: Path, where: tuple[str, str]) -> None:
    out = tmp_path / "map.png"
    args = ("pe-map", "--pe", "sinusoid-1d", "--order", "snake", "--grid", "4x6", "--dim", "32")
    result = run(*args, *where, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_module_imports_no_service_dependency() -> None:
    tree = ast.parse(Path(pe_tools.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    service = {"fastapi", "sqlalchemy", "ray", "uvicorn", "api", "service", "workers"}
    assert not {name.split(".")[0] for name in imported if name} & service
