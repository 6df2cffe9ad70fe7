"""`loope user add`: names checked before anything is written, the database named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loope.cli.app import app as cli

runner = CliRunner()


@pytest.mark.parametrize("name", ["", " ", "ada lovelace", "_ada", "a" * 65, "ada\n"])
def test_a_bad_user_name_is_one_error_line_and_no_user(tmp_path: Path, name: str) -> None:
    result = runner.invoke(cli, ["user", "add", name, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    expected = f"error: user name {name!r}: 1 to 64 ASCII letters"
    assert result.output.startswith(expected), result.output
    again = runner.invoke(cli, ["user", "add", "ada", "--data-dir", str(tmp_path)])
    assert again.exit_code == 0, again.output


def test_adding_a_user_says_which_database_holds_it(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["user", "add", "ada.l@lab", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"added user 'ada.l@lab' to sqlite:///{tmp_path}" in result.output
    taken = runner.invoke(cli, ["user", "add", "ada.l@lab", "--data-dir", str(tmp_path)])
    assert taken.exit_code == 1 and "exists already" in taken.output
