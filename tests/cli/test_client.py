"""The REST commands of the CLI against a real server on loopback (SQLite, no dispatcher).

A worker is played by the test: it claims runs through the queue on the same database and
reports epochs and the outcome over HTTP, as a Ray worker would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from loope.cli import client  # noqa: F401  (registers the commands)
from loope.cli.app import app
from service.auth import Accounts
from service.db import make_engine, make_sessionmaker
from service.queue import RunQueue
from service.settings import Settings
from tests.conftest import ThreadServer, free_port

runner = CliRunner()
SPEC = {
    "model": {"arch": "vit", "size": "tiny"},
    "pe": {"name": "none"},
    "dataset": {"name": "three-cell", "preset": "quick"},
    "train": {"epochs": 4},
}


@dataclass
class Served:
    url: str
    api: httpx.Client
    queue: RunQueue


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path / "data", auth="off")
    with (
        ThreadServer(settings, dispatch=False) as server,
        httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as api,
    ):
        engine = make_engine(settings.resolved_database_url())
        yield Served(server.url, api, RunQueue(make_sessionmaker(engine)))
        engine.dispose()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def write(tmp_path: Path, name: str, body: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body) if name.endswith(".yaml") else json.dumps(body))
    return path


def play_worker(served: Served, run_id: int, epochs: int, outcome: str = "succeeded") -> None:
    """Claim a run and report `epochs` epochs of metrics, then the outcome."""
    run, _ = served.queue.claim(run_id, lease_s=600)
    attempt = run.attempt
    served.api.post(f"/runs/{run_id}/started", json={"attempt": attempt})
    for epoch in range(1, epochs + 1):
        points = [
            {"key": "train/loss", "step": epoch * 10, "value": 1.0 / epoch},
            {"key": "val/acc", "step": epoch * 10, "value": 50.0 + epoch},
            {"key": "epoch", "step": epoch * 10, "value": float(epoch)},
        ]
        served.api.post(f"/runs/{run_id}/metrics", json={"attempt": attempt, "points": points})
    if outcome:
        served.api.post(f"/runs/{run_id}/finished", json={"attempt": attempt, "outcome": outcome})


def test_submit_spec_in_json_and_yaml_with_seeds(served: Served, tmp_path: Path) -> None:
    code, out = invoke(
        "submit", str(write(tmp_path, "a.json", SPEC)), "--url", served.url, "--seeds", "0,1,2"
    )
    assert code == 0, out
    assert "created 3 runs (#1-#3), reused 0, skipped 0" in out, out
    code, out = invoke(
        "submit", str(write(tmp_path, "a.yaml", SPEC)), "--url", served.url, "--seeds", "0,1,2,3"
    )
    assert code == 0 and "created 1 run (#4), reused 3 (#1-#3), skipped 0" in out, out


def test_sweep_with_axes_from_the_command_line(served: Served, tmp_path: Path) -> None:
    path = write(tmp_path, "one.yaml", SPEC)
    code, out = invoke(
        "sweep",
        str(path),
        "--axis",
        "pe.name=none,learnable,loope",
        "--axis",
        "train.lr=1e-3,5e-4",
        "--seeds",
        "0,1",
        "--url",
        served.url,
    )
    assert code == 0, out
    assert "created 12 runs" in out and "sweep " in out
    runs = served.api.get("/runs", params={"limit": 100}).json()["runs"]
    assert sorted({r["pe"] for r in runs}) == ["learnable", "loope", "none"]


def test_a_bad_spec_is_one_line_naming_the_field(served: Served, tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", {**SPEC, "pe": {"name": "no-such-pe"}})
    code, out = invoke("submit", str(path), "--url", served.url)
    assert code == 1
    assert "pe.name" in out and "no-such-pe" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["runs"], ["compare"], ["cancel", "1"], ["watch", "1"], ["export"]):
        code, out = invoke(*args, "--url", url)
        assert code == 1, args
        assert "cannot reach the loope server" in out and "Traceback" not in out, args


def test_runs_filters_and_json(served: Served, tmp_path: Path) -> None:
    invoke(
        "sweep",
        str(write(tmp_path, "s.yaml", SPEC)),
        "--axis",
        "pe.name=none,loope",
        "--seeds",
        "0,1",
        "--url",
        served.url,
    )
    code, out = invoke("runs", "--pe", "loope", "--json", "--url", served.url)
    assert code == 0
    listed = json.loads(out)
    assert [r["pe"] for r in listed] == ["loope", "loope"]
    code, out = invoke("runs", "--status", "queued", "--limit", "3", "--url", served.url)
    assert code == 0 and out.count("QUEUED") == 3
    code, out = invoke(
        "runs", "--mine", "--arch", "vit", "--dataset", "digits", "--json", "--url", served.url
    )
    assert code == 0 and json.loads(out) == []


def test_cancel_then_cancel_again_is_a_clear_refusal(served: Served, tmp_path: Path) -> None:
    invoke("submit", str(write(tmp_path, "a.yaml", SPEC)), "--url", served.url)
    code, out = invoke("cancel", "1", "--url", served.url)
    assert code == 0 and "run 1: CANCELLED" in out
    code, out = invoke("cancel", "1", "99", "--url", served.url)
    assert code == 1
    assert "run 1: HTTP 409" in out and "run 99: HTTP 404" in out and "Traceback" not in out


def test_watch_follows_epochs_until_every_run_ends(served: Served, tmp_path: Path) -> None:
    invoke("submit", str(write(tmp_path, "a.yaml", SPEC)), "--seeds", "0,1", "--url", served.url)
    play_worker(served, 1, 4)
    play_worker(served, 2, 2, outcome="")
    finisher = threading.Timer(1.0, lambda: play_worker_finish(served, 2))
    finisher.start()
    started = time.monotonic()
    code, out = invoke(
        "watch", "1", "2", "--interval", "0.2", "--timeout", "30", "--url", served.url
    )
    finisher.join()
    assert code == 0, out
    assert time.monotonic() - started >= 0.9
    assert "4/4" in out and "2 of 2 runs succeeded" in out
    # Not a terminal: a line per change, the running state included.
    lines = out.splitlines()
    assert any(line.startswith("run 2 none seed 1: 2/") and "running" in line for line in lines)
    assert any(line.startswith("run 2 none seed 1: ") and "succeeded" in line for line in lines)


def play_worker_finish(served: Served, run_id: int) -> None:
    attempt = served.api.get(f"/runs/{run_id}").json()["attempt"]
    served.api.post(f"/runs/{run_id}/finished", json={"attempt": attempt, "outcome": "succeeded"})


def test_watch_exits_non_zero_when_a_run_did_not_succeed(served: Served, tmp_path: Path) -> None:
    invoke("submit", str(write(tmp_path, "a.yaml", SPEC)), "--url", served.url)
    play_worker(served, 1, 1, outcome="diverged")
    code, out = invoke("watch", "1", "--url", served.url)
    assert code == 1
    assert "run 1 (none) DIVERGED" in out and "0 of 1 runs succeeded" in out


def test_compare_and_export_in_every_format(served: Served, tmp_path: Path) -> None:
    invoke(
        "sweep",
        str(write(tmp_path, "s.yaml", SPEC)),
        "--axis",
        "pe.name=none,loope",
        "--seeds",
        "0,1",
        "--url",
        served.url,
    )
    for run_id, accuracy in zip(range(1, 5), (55.0, 57.0, 90.0, 94.0), strict=True):
        run, _ = served.queue.claim(run_id, lease_s=600)
        points = [{"key": "test/acc", "step": 1, "value": accuracy}]
        served.api.post(f"/runs/{run_id}/metrics", json={"attempt": run.attempt, "points": points})
        served.api.post(
            f"/runs/{run_id}/finished", json={"attempt": run.attempt, "outcome": "succeeded"}
        )
    code, out = invoke("compare", "--sweep", "1", "--baseline", "none", "--url", served.url)
    assert code == 0 and "56.0 ± 1.4" in out and "92.0 ± 2.8" in out, out
    assert "acc vs none" in out and "+36.0 p=" in out, out
    code, out = invoke("export", "--sweep", "1", "--format", "markdown", "--url", served.url)
    assert code == 0 and "| loope |" in out and "92.0" in out, out
    code, out = invoke("export", "--sweep", "1", "--format", "latex", "--url", served.url)
    assert code == 0 and r"\begin{tabular}" in out, out
    target = tmp_path / "table.csv"
    code, out = invoke(
        "export", "--sweep", "1", "--format", "csv", "-o", str(target), "--url", served.url
    )
    assert code == 0 and "wrote" in out
    assert target.read_text().splitlines()[0].startswith("pe.name")
    code, out = invoke("export", "--sweep", "1", "--format", "json", "--url", served.url)
    assert {g["key"]["pe.name"] for g in json.loads(out)["groups"]} == {"none", "loope"}
    code, out = invoke("compare", "--group-by", "pe.nome", "--url", served.url)
    assert code == 1 and "unknown spec field 'pe.nome'" in out and len(out.splitlines()) == 1


def test_every_command_has_help_with_an_example() -> None:
    for command in ("serve", "submit", "sweep", "runs", "watch", "cancel", "retry",
                    "compare", "export", "demo"):  # fmt: skip
        code, out = invoke(command, "--help")
        assert code == 0, command
        assert "Example" in out and f"loope {command}" in out, command


def test_the_token_comes_from_the_flag_or_the_environment(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", auth="on")
    with ThreadServer(settings, dispatch=False) as server:
        engine = make_engine(settings.resolved_database_url())
        _, token = Accounts(make_sessionmaker(engine)).add_user("ada")
        engine.dispose()
        code, out = invoke("runs", "--url", server.url)
        assert code == 1 and "HTTP 401" in out and "LOOPE_TOKEN" in out
        code, out = invoke("runs", "--url", server.url, "--token", "loope_wrong")
        assert code == 1 and "HTTP 401" in out
        assert invoke("runs", "--url", server.url, "--token", token)[0] == 0
        by_env = runner.invoke(app, ["runs", "--url", server.url], env={"LOOPE_TOKEN": token})
        assert by_env.exit_code == 0, by_env.output


def test_retry_puts_an_ended_run_back_in_the_queue(served: Served, tmp_path: Path) -> None:
    invoke("submit", str(write(tmp_path, "a.yaml", SPEC)), "--url", served.url)
    code, out = invoke("retry", "1", "--url", served.url)
    assert code == 1 and "run 1: HTTP 409" in out and "Traceback" not in out
    play_worker(served, 1, 1, outcome="diverged")
    code, out = invoke("retry", "1", "--url", served.url)
    assert code == 0 and "run 1: QUEUED" in out, out


def test_private_submissions_are_recorded_private(served: Served, tmp_path: Path) -> None:
    path = write(tmp_path, "one.yaml", SPEC)
    assert invoke("submit", str(path), "--url", served.url, "--private")[0] == 0
    code, out = invoke(
        "sweep", str(path), "--axis", "pe.name=none,loope", "--private", "--url", served.url
    )
    assert code == 0 and "created 1 run (#2), reused 1 (#1)" in out, out  # none × 0 exists
    assert invoke("submit", str(path), "--url", served.url, "--seeds", "9")[0] == 0
    runs = served.api.get("/runs", params={"limit": 100}).json()["runs"]
    visibility = {(r["pe"], r["seed"], r["sweep_id"] is None): r["visibility"] for r in runs}
    assert visibility == {
        ("none", 0, True): "private",
        ("loope", 0, False): "private",
        ("none", 9, True): "team",
    }


def test_submission_summary_names_the_run_ids_in_singular_or_plural() -> None:
    done = {"created": [5, 6], "reused": [3], "skipped": [], "policy": "reuse"}
    assert client.submission_summary(done) == (
        "created 2 runs (#5, #6), reused 1 (#3), skipped 0 (policy reuse)"
    )
    done = {"created": [9], "reused": [], "skipped": [12, 10, 11], "policy": "skip", "sweep_id": 4}
    assert client.submission_summary(done) == (
        "sweep 4: created 1 run (#9), reused 0, skipped 3 (#10-#12) (policy skip)"
    )


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.yaml", "model: {arch: vit\n  pe: [1,\n", "line 2, column 5: expected ',' or '}'"),
        ("bad.json", '{"model": 1,,}', "line 1, column 13: Expecting property name"),
    ],
)
def test_a_syntax_error_in_the_file_is_one_line_with_its_place(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    result = runner.invoke(app, ["submit", str(path), "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {where}"), lines


def test_export_to_a_missing_folder_is_one_line_naming_the_path(
    served: Served, tmp_path: Path
) -> None:
    target = tmp_path / "no" / "such" / "t.csv"
    result = runner.invoke(
        app, ["export", "--format", "csv", "-o", str(target), "--url", served.url]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.strip().splitlines() == [
        f"error: cannot write {target}: No such file or directory"
    ]


def test_empty_seeds_are_refused_not_read_as_seed_zero(served: Served, tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", SPEC)
    for command in ("submit", "sweep"):
        code, out = invoke(command, str(path), "--url", served.url, "--seeds", "")
        assert code == 2 and "--seeds ''" in out and "Traceback" not in out, out
    assert served.api.get("/runs").json()["runs"] == []
