"""Commands that talk to a loope server over REST.

`serve` starts one; `submit`, `sweep`, `runs`, `watch`, `cancel`, `retry`, `compare` and
`export` talk to one. The server's address and token come from `--url` / `--token` or from
the LOOPE_URL / LOOPE_TOKEN environment variables; the token travels as
`Authorization: Bearer`. A refusal from the server is printed as one line, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from loope.cli.app import app
from loope.spec import load_spec_file

console = Console(width=None if sys.stdout.isatty() else 160)

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOption = Annotated[
    str, typer.Option("--url", envvar="LOOPE_URL", help="Address of the loope server.")
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="LOOPE_TOKEN", help="Bearer token (from `loope user add`)."),
]
FINAL = frozenset({"SUCCEEDED", "FAILED", "DIVERGED", "CANCELLED"})


class ServerError(Exception):
    """The server refused a request or could not be reached; the message is one line."""


def request(url: str, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> Any:
    """Call the REST API and return the JSON body, or raise ServerError with its message."""
    response = _send(url, method, path, token, **kwargs)
    return response.json() if response.content else None


def request_text(url: str, method: str, path: str, *, token: str | None = None, **kw: Any) -> str:
    """Call the REST API and return the body as text (exports)."""
    return _send(url, method, path, token, **kw).text


def _send(url: str, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(
            method, f"{url}/api/v1{path}", timeout=60, headers=headers, **kwargs
        )
    except httpx.TransportError as error:
        raise ServerError(f"cannot reach the loope server at {url}: {error}") from None
    if response.status_code >= 400:
        raise ServerError(_explain(response, method, path, token))
    return response


def _explain(response: httpx.Response, method: str, path: str, token: str | None) -> str:
    code = response.status_code
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text[:500]
    if isinstance(detail, list):
        detail = "; ".join(_field_message(item) for item in detail)
    if code == 404 and detail == "Not Found":
        detail = f"this server has no {method} {path} endpoint (is it an older loope?)"
    if code == 401 and not token:
        detail = f"{detail} (give a token with --token or LOOPE_TOKEN)"
    return f"HTTP {code}: {' '.join(str(detail).split())}"


def _field_message(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    if "field" in item:
        return f"{item['field']}: {item['message']}"
    where = ".".join(str(part) for part in item.get("loc", []))
    return f"{where}: {item.get('msg', item)}"


def fail(message: str) -> typer.Exit:
    """Print `message` as one error line and return the exit to raise."""
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


@dataclass(frozen=True)
class Server:
    """A loope server as the CLI reaches it: its address and the user's token."""

    url: str
    token: str | None = None

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return request(self.url, method, path, token=self.token, **kwargs)

    def text(self, method: str, path: str, **kwargs: Any) -> str:
        return request_text(self.url, method, path, token=self.token, **kwargs)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(envvar="LOOPE_DATA_DIR", help="Holds the database and artifacts."),
    ] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray.")] = None,
    num_gpus: Annotated[int | None, typer.Option(help="GPUs of the local Ray.")] = None,
    no_supervise: Annotated[
        bool,
        typer.Option(
            "--no-supervise",
            help="Run the server in this process instead of a child that is restarted when it"
            " dies, for an orchestrator that restarts it (docker-compose).",
        ),
    ] = False,
) -> None:
    """Start the API, the dispatcher and (unless RAY_ADDRESS is set) a local Ray.

    Every LOOPE_* setting of service/settings.py (LOOPE_DATABASE_URL, LOOPE_ARTIFACT_ROOT,
    LOOPE_API_URL, ...) is read from the environment; the options here override them.

    The server runs in a child process that is started again when it dies unexpectedly
    (Ray ends the dispatcher's driver when its Ray head restarts), after a back-off of 1 s
    doubling to 30 s; after 5 failures within 2 minutes `loope serve` gives up with exit
    code 1. A server that never came up (its port in use, a refused setting) is not
    restarted: `loope serve` exits with the server's exit code. SIGTERM or Ctrl-C stops the
    server and exits 0. Settings are checked before anything starts (exit code 2).

    Examples:

      loope serve --data-dir ./loope-data --port 8000

      LOOPE_DATABASE_URL=postgresql+psycopg://db/loope RAY_ADDRESS=auto loope serve --host 0.0.0.0
    """
    import os

    from pydantic import ValidationError

    from loope.cli.supervise import bind_error, serve_app, supervise
    from service.auth import AuthConfigError, auth_required
    from service.settings import Settings

    given = {"data_dir": data_dir, "ray_num_cpus": num_cpus, "ray_num_gpus": num_gpus}
    if os.environ.get("RAY_ADDRESS"):
        given["ray_address"] = os.environ["RAY_ADDRESS"]
    overrides = {key: value for key, value in given.items() if value is not None}
    try:  # refuse a bad setting before any process or Ray is started
        settings = Settings(host=host, port=port, **overrides)
        auth_required(settings.auth, settings.host)
    except AuthConfigError as refusal:
        typer.echo(f"error: LOOPE_AUTH: {refusal}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as invalid:
        for problem in invalid.errors():
            field = "LOOPE_" + "_".join(str(part) for part in problem["loc"]).upper()
            typer.echo(f"error: {field}={problem['input']!r}: {problem['msg']}", err=True)
        raise typer.Exit(2) from None
    if (unusable := bind_error(host, port)) is not None:
        typer.echo(f"error: --host {host} --port {port}: cannot listen there: {unusable}", err=True)
        raise typer.Exit(2)
    if not no_supervise:
        raise typer.Exit(supervise(_server_command(host, port, data_dir, num_cpus, num_gpus)))
    from api.app import create_app

    raise typer.Exit(serve_app(create_app(settings), host, port))


def _server_command(
    host: str, port: int, data_dir: Path | None, num_cpus: int | None, num_gpus: int | None
) -> list[str]:
    """`loope serve --no-supervise` with the given options, for the supervisor's child."""
    command = [sys.executable, "-m", "loope", "serve", "--no-supervise"]
    command += ["--host", host, "--port", str(port)]
    given = {"--data-dir": data_dir, "--num-cpus": num_cpus, "--num-gpus": num_gpus}
    for option, value in given.items():
        if value is not None:
            command += [option, str(value)]
    return command


def _seed_list(seeds: str | None) -> list[int] | None:
    """`--seeds 0,1,2` as a list; None when not given; an empty or blank value is refused."""
    if seeds is None:
        return None
    try:
        return [int(s) for s in seeds.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"--seeds {seeds!r}: give integers separated by commas (e.g. 0,1,2)"
        ) from None


def _axis(text: str) -> tuple[str, list[Any]]:
    """`pe.name=none,loope` → ("pe.name", ["none", "loope"]); values are read as YAML."""
    path, sep, values = text.partition("=")
    if not sep or not path or not values:
        raise typer.BadParameter(f"--axis {text!r}: write PATH=V1,V2 (e.g. pe.name=none,loope)")
    return path.strip(), [yaml.safe_load(v) for v in values.split(",")]


def submit_file(
    url: str,
    path: Path,
    seeds: list[int] | None,
    *,
    token: str | None = None,
    axes: dict[str, list[Any]] | None = None,
    policy: str | None = None,
    priority: int | None = None,
    visibility: str | None = None,
) -> dict[str, Any]:
    """Submit a spec file (one spec) or a sweep file (a `base` and `axes`).

    `axes` turn a spec file into a sweep, or replace axes of a sweep file.
    """
    body = load_spec_file(path)
    given = {"policy": policy, "priority": priority, "visibility": visibility}
    extra = {k: v for k, v in given.items() if v is not None}
    if "base" in body or axes:
        sweep = body if "base" in body else {"base": body, "name": body.get("name")}
        sweep = {**sweep, "axes": {**sweep.get("axes", {}), **(axes or {})}, **extra}
        if seeds:
            sweep["seeds"] = seeds
        return request(url, "POST", "/sweeps", token=token, json=sweep)
    wrapped = {"spec": body, "seeds": seeds or [0], **extra}
    return request(url, "POST", "/specs", token=token, json=wrapped)


def submission_summary(done: dict[str, Any]) -> str:
    """`created 2 runs (#5, #6), reused 1 (#3), skipped 0 (policy reuse)`, with run ids."""
    sweep = f"sweep {done['sweep_id']}: " if done.get("sweep_id") is not None else ""
    created, reused, skipped = done["created"], done["reused"], done["skipped"]
    runs = "run" if len(created) == 1 else "runs"
    return (
        f"{sweep}created {len(created)} {runs}{_ids(created)}, "
        f"reused {len(reused)}{_ids(reused)}, skipped {len(skipped)}{_ids(skipped)} "
        f"(policy {done['policy']})"
    )


def _ids(run_ids: list[int]) -> str:
    """` (#5, #6, #9-#20)`: run ids, consecutive ones as a range; empty when there are none."""
    if not run_ids:
        return ""
    spans: list[list[int]] = []
    for run_id in sorted(set(run_ids)):
        if spans and run_id == spans[-1][1] + 1:
            spans[-1][1] = run_id
        else:
            spans.append([run_id, run_id])
    parts = [f"#{lo}" if lo == hi else f"#{lo}, #{hi}" if hi == lo + 1 else f"#{lo}-#{hi}"
             for lo, hi in spans]  # fmt: skip
    return f" ({', '.join(parts)})"


def _print_submission(done: dict[str, Any]) -> None:
    console.print(submission_summary(done), highlight=False, soft_wrap=True)


FileArgument = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML or JSON.")]
SeedsOption = Annotated[str | None, typer.Option(help="Comma-separated seeds, e.g. 0,1,2.")]
PolicyOption = Annotated[
    str | None,
    typer.Option(help="When a spec × seed exists already: reuse (default), skip or force-new."),
]
PriorityOption = Annotated[
    int | None, typer.Option(help="Higher runs first (-1000..1000; default 0).")
]
PrivateOption = Annotated[
    bool,
    typer.Option(
        "--private", help="Only you and admins may read the runs (default: the whole team)."
    ),
]


def _visibility(private: bool) -> str | None:
    return "private" if private else None


@app.command()
def submit(
    file: FileArgument,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    seeds: SeedsOption = None,
    policy: PolicyOption = None,
    priority: PriorityOption = None,
    private: PrivateOption = False,
) -> None:
    """Submit a spec file (one experiment × seeds) or a sweep file.

    Examples:

      loope submit examples/three_cell_quick_one.yaml --seeds 0,1,2

      loope submit examples/three_cell_quick.yaml --policy force-new

      loope submit examples/three_cell_quick_one.yaml --private
    """
    try:
        done = submit_file(
            url, file, _seed_list(seeds), token=token, policy=policy, priority=priority,
            visibility=_visibility(private),
        )  # fmt: skip
    except (ServerError, ValueError) as error:
        raise fail(str(error)) from None
    _print_submission(done)


@app.command()
def sweep(
    file: FileArgument,
    axis: Annotated[
        list[str] | None,
        typer.Option(help="PATH=V1,V2: an axis added or replaced (repeatable)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    seeds: SeedsOption = None,
    policy: PolicyOption = None,
    priority: PriorityOption = None,
    private: PrivateOption = False,
    watch_runs: Annotated[
        bool, typer.Option("--watch", help="Follow the runs until they end.")
    ] = False,
) -> None:
    """Submit a grid: a sweep file, or a spec file with --axis; fills only missing cells.

    Examples:

      loope sweep examples/three_cell_quick.yaml --seeds 0,1,2 --watch

      loope sweep examples/three_cell_quick_one.yaml --axis pe.name=none,loope --seeds 0,1
    """
    axes = dict(_axis(text) for text in axis or [])
    try:
        done = submit_file(
            url, file, _seed_list(seeds), token=token, axes=axes, policy=policy,
            priority=priority, visibility=_visibility(private),
        )  # fmt: skip
    except (ServerError, ValueError) as error:
        raise fail(str(error)) from None
    _print_submission(done)
    if watch_runs:
        ids = done["created"] + done["reused"] + done["skipped"]
        _watch_to_end(Server(url, token), sorted(set(ids)), 2.0, 7 * 24 * 3600.0)


def list_all_runs(server: Server, params: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Runs matching `params`, following the cursor until `limit` runs are read."""
    runs: list[dict[str, Any]] = []
    cursor = 0
    while len(runs) < limit:
        page_size = min(1000, limit - len(runs))
        page = server.call("GET", "/runs", params={**params, "cursor": cursor, "limit": page_size})
        runs += page["runs"]
        if page.get("next_cursor") is None:
            break
        cursor = page["next_cursor"]
    return runs


@app.command()
def runs(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    status: Annotated[
        str | None, typer.Option(help="QUEUED, RUNNING, SUCCEEDED, FAILED, DIVERGED, CANCELLED.")
    ] = None,
    pe: Annotated[str | None, typer.Option(help="Only runs of this PE.")] = None,
    arch: Annotated[str | None, typer.Option(help="Only runs of this architecture.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only runs on this dataset.")] = None,
    sweep_id: Annotated[
        int | None, typer.Option("--sweep", help="Only runs of this sweep.")
    ] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only my runs.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many runs.", min=1)] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List runs, oldest first, with filters.

    Examples:

      loope runs --status RUNNING --mine

      loope runs --sweep 3 --pe loope --json
    """
    given = {"status": status.upper() if status else None, "pe": pe, "arch": arch,
             "dataset": dataset, "sweep_id": sweep_id, "mine": mine or None}  # fmt: skip
    params = {k: v for k, v in given.items() if v is not None}
    try:
        found = list_all_runs(Server(url, token), params, limit)
    except ServerError as error:
        raise fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    console.print(runs_table(found))


def runs_table(found: list[dict[str, Any]]) -> Table:
    owners = any(run.get("owner") for run in found)
    columns = ["id", "sweep", "status", "pe", "arch", "dataset", "seed", "attempt", "failure"]
    table = Table(*columns, *(["owner"] if owners else []))
    for run in found:
        failure = run.get("failure_kind") or ""
        row = [
            str(run["id"]), str(run.get("sweep_id") or ""), run["status"], run["pe"], run["arch"],
            run["dataset"], str(run["seed"]), str(run["attempt"]), failure,
        ]  # fmt: skip
        table.add_row(*row, *([str(run.get("owner") or "")] if owners else []))
    return table


@dataclass
class RunProgress:
    """What `watch` shows of one run: epochs done of total, last loss, time left."""

    status: str
    epoch: int
    epochs: int
    loss: float | None
    accuracy: float | None
    eta_s: float | None

    def describe(self) -> str:
        parts = [self.status.lower()]
        if self.loss is not None and math.isfinite(self.loss):
            parts.append(f"loss {self.loss:.4f}")
        if self.accuracy is not None and math.isfinite(self.accuracy):
            parts.append(f"val acc {self.accuracy:.1f}")
        if self.status == "RUNNING" and self.eta_s is not None:
            parts.append(f"ETA {_duration(self.eta_s)}")
        return "  ".join(parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def run_progress(run: dict[str, Any], now: dt.datetime) -> RunProgress:
    """Progress of a run from its detail (GET /runs/{id}): spec, summary, timestamps."""
    summary = run.get("summary") or {}
    epochs = int(((run.get("spec") or {}).get("train") or {}).get("epochs") or 0)
    epoch = int(_number(summary.get("epoch")) or 0)
    eta = None
    started = run.get("started_at")
    if started and 0 < epoch < epochs:
        began = dt.datetime.fromisoformat(started)
        began = began if began.tzinfo else began.replace(tzinfo=dt.UTC)
        per_epoch = max((now - began).total_seconds(), 0.0) / epoch
        eta = per_epoch * (epochs - epoch)
    return RunProgress(
        status=run["status"],
        epoch=epochs if run["status"] == "SUCCEEDED" else epoch,
        epochs=epochs,
        loss=_number(summary.get("train/loss")),
        accuracy=_number(summary.get("val/acc")),
        eta_s=eta,
    )


class RunBoard:
    """One progress bar per run, refreshed from the server until every run has ended.

    When the output is not a terminal (a log file, a pipe), bars cannot redraw: each run
    then gets a line whenever its status or epoch changes.
    """

    def __init__(self, server: Server, run_ids: list[int], progress: Progress) -> None:
        self.server = server
        self.run_ids = run_ids
        self.progress = progress
        self.tasks: dict[int, TaskID] = {}
        self.ended: dict[int, dict[str, Any]] = {}
        self.as_lines = progress.disable
        self.shown: dict[int, tuple[str, int]] = {}

    def refresh(self) -> bool:
        """Poll once: statuses in one list call, details only of runs that are moving.

        A queued run is read in full once (for its epoch count), a running one at every
        poll, an ended one a last time.
        """
        now = dt.datetime.now(dt.UTC)
        statuses = self._statuses()
        for run_id in self.run_ids:
            if run_id in self.ended:
                continue
            seen = run_id in self.tasks
            if seen and statuses.get(run_id) == "QUEUED":
                continue
            run = self.server.call("GET", f"/runs/{run_id}")
            self._show(run, run_progress(run, now))
            if run["status"] in FINAL:
                self.ended[run_id] = run
        return len(self.ended) == len(self.run_ids)

    def _statuses(self) -> dict[int, str]:
        """Status of every watched run from one page of the run list, when the ids fit one."""
        first, last = min(self.run_ids), max(self.run_ids)
        if last - first >= 1000:
            return {}
        params = {"cursor": first - 1, "limit": last - first + 1}
        page = self.server.call("GET", "/runs", params=params)
        return {run["id"]: run["status"] for run in page["runs"]}

    def _show(self, run: dict[str, Any], state: RunProgress) -> None:
        if self.as_lines:
            self._print_line(run, state)
        if run["id"] not in self.tasks:
            label = f"run {run['id']} {run['pe']} seed {run['seed']}"
            self.tasks[run["id"]] = self.progress.add_task(
                label, total=state.epochs or None, state=""
            )
        self.progress.update(
            self.tasks[run["id"]],
            total=state.epochs or None,
            completed=state.epoch,
            state=state.describe(),
        )

    def _print_line(self, run: dict[str, Any], state: RunProgress) -> None:
        if self.shown.get(run["id"]) == (state.status, state.epoch):
            return
        self.shown[run["id"]] = (state.status, state.epoch)
        label = f"run {run['id']} {run['pe']} seed {run['seed']}"
        console.print(f"{label}: {state.epoch}/{state.epochs} epochs  {state.describe()}")


def watch_runs(
    server: Server, run_ids: list[int], interval_s: float, timeout_s: float
) -> list[dict[str, Any]]:
    """Show live bars (epoch, loss, ETA) until every run has ended, or a line per change
    when the output is not a terminal; returns the runs' details."""
    deadline = time.monotonic() + timeout_s
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("epochs"), TextColumn("{task.fields[state]}"), console=console,
        refresh_per_second=2, disable=not console.is_terminal,
    ) as progress:  # fmt: skip
        board = RunBoard(server, run_ids, progress)
        while not board.refresh():
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{len(run_ids) - len(board.ended)} runs still unfinished after "
                    f"{timeout_s:.0f} s (they go on; watch them again later)"
                )
            time.sleep(interval_s)
    return [board.ended[run_id] for run_id in run_ids]


def _watch_to_end(server: Server, run_ids: list[int], interval_s: float, timeout_s: float) -> None:
    try:
        ended = watch_runs(server, run_ids, interval_s, timeout_s)
    except ServerError as error:
        raise fail(str(error)) from None
    bad = [run for run in ended if run["status"] != "SUCCEEDED"]
    for run in bad:
        reason = (run.get("failure_reason") or "").strip().splitlines()
        console.print(
            f"run {run['id']} ({run['pe']}) {run['status']}: {reason[-1] if reason else ''}"
        )
    console.print(f"{len(ended) - len(bad)} of {len(ended)} runs succeeded")
    if bad:
        raise typer.Exit(code=1)


@app.command()
def watch(
    run_ids: Annotated[list[int] | None, typer.Argument(help="Runs to follow.")] = None,
    sweep_id: Annotated[int | None, typer.Option("--sweep", help="Follow a sweep's runs.")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls.", min=0.1)] = 2.0,
    timeout: Annotated[float, typer.Option(help="Stop watching after this many seconds.")] = 86400,
) -> None:
    """Live progress bars per run (epoch, loss, ETA) until they end; exit 1 if any failed.

    With neither run ids nor --sweep, follows every queued and running run.

    Examples:

      loope watch 12 13 14

      loope watch --sweep 3 --interval 5
    """
    server = Server(url, token)
    try:
        ids = list(run_ids or [])
        if sweep_id is not None:
            ids += [r["id"] for r in list_all_runs(server, {"sweep_id": sweep_id}, 100_000)]
        if not run_ids and sweep_id is None:
            for status in ("RUNNING", "QUEUED"):
                ids += [r["id"] for r in list_all_runs(server, {"status": status}, 100_000)]
    except ServerError as error:
        raise fail(str(error)) from None
    if not ids:
        console.print("no runs to watch")
        return
    _watch_to_end(server, sorted(set(ids)), interval, timeout)


def _act_on_runs(url: str, token: str | None, run_ids: list[int], action: str) -> None:
    server = Server(url, token)
    errors = 0
    for run_id in run_ids:
        try:
            run = server.call("POST", f"/runs/{run_id}/{action}")
        except ServerError as error:
            console.print(f"[red]error:[/red] run {run_id}: {error}", highlight=False)
            errors += 1
            continue
        console.print(f"run {run_id}: {run['status']} (attempt {run['attempt']})")
    if errors:
        raise typer.Exit(code=1)


RunIdsArgument = Annotated[list[int], typer.Argument(help="Run ids.")]


@app.command()
def cancel(
    run_ids: RunIdsArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None
) -> None:
    """Cancel queued or running runs; a running one stops and frees its resources.

    Examples:

      loope cancel 17

      loope cancel 17 18 19 --url http://head:8000
    """
    _act_on_runs(url, token, run_ids, "cancel")


@app.command()
def retry(run_ids: RunIdsArgument, url: UrlOption = DEFAULT_URL, token: TokenOption = None) -> None:
    """Put ended runs (failed, diverged, cancelled) back in the queue as a new attempt.

    Examples:

      loope retry 17

      LOOPE_TOKEN=... loope retry 17 18
    """
    _act_on_runs(url, token, run_ids, "retry")


GroupByOption = Annotated[
    list[str] | None, typer.Option(help="Spec fields to group by (repeatable).")
]
SweepOption = Annotated[int | None, typer.Option("--sweep", help="Only runs of this sweep.")]
BaselineOption = Annotated[
    str | None,
    typer.Option(help="PE to test every other PE against (paired over seeds, Holm-adjusted)."),
]
PrefixOption = Annotated[
    str, typer.Option(help="Which metrics: test/ (final) or val/ (last validation).")
]
THREE_CELL_GROUPS = ("distance", "orientation", "area", "vector_sum", "average")


def comparison_params(
    group_by: list[str] | None, sweep_id: int | None, baseline: str | None, prefix: str
) -> dict[str, Any]:
    params: dict[str, Any] = {"group_by": group_by or ["pe.name"], "metric_prefix": prefix}
    if sweep_id is not None:
        params["sweep_id"] = sweep_id
    if baseline is not None:
        params["baseline_pe"] = baseline
    return params


def comparison_columns(comparison: dict[str, Any]) -> list[str]:
    """Three-Cell's four groups and their average when present, else every accuracy-like key."""
    names = sorted({name for g in comparison["groups"] for name in g["metrics"]})
    three_cell = [m for m in THREE_CELL_GROUPS if m in names]
    return three_cell or [m for m in names if not m.startswith("bit") and m != "loss"]


def headline_metric(comparison: dict[str, Any]) -> str | None:
    """The one metric significance is shown for: Three-Cell's average, else accuracy."""
    columns = comparison_columns(comparison)
    return next((m for m in ("average", "acc") if m in columns), columns[0] if columns else None)


def mean_std(stat: dict[str, Any] | None) -> str:
    """`mean ± std` at one decimal; the mean alone when one seed leaves std undefined."""
    if stat is None:
        return "—"
    mean, std = stat["mean"], stat["std"]
    if not isinstance(mean, int | float):
        return str(mean)
    if not isinstance(std, int | float) or math.isnan(std):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f}"


def significance(test: dict[str, Any] | None) -> str:
    """A paired test as `+31.2 p=0.004*`: mean difference, Holm-adjusted p, * if significant."""
    if not test:
        return "—"
    if test["verdict"] == "no test" or not isinstance(test.get("p_holm"), int | float):
        return "no test"
    mark = "*" if test["verdict"] == "significant" else ""
    delta = test.get("mean_difference")
    shift = f"{delta:+.1f} " if isinstance(delta, int | float) else ""
    return f"{shift}p={test['p_holm']:.2g}{mark}"


def comparison_table(
    comparison: dict[str, Any], against: list[dict[str, Any]] | None = None
) -> Table:
    """Mean ± std per group and metric, the divergence count and the majority-rate row.

    Each comparison in `against` (the same groups, computed with a `baseline_pe`) adds a
    column with the paired test of the headline metric against that baseline.
    """
    from service.exports import majority_rows, seeds_of  # the exports' rules, used here only

    groups, keys = comparison["groups"], comparison["group_by"]
    columns, headline = comparison_columns(comparison), headline_metric(comparison)
    tested = [c for c in [comparison, *(against or [])] if c.get("baseline_pe")]
    test_columns = [f"{headline or ''} vs {c['baseline_pe']}".lstrip() for c in tested]
    table = Table(*keys, "n", *columns, "diverged", *test_columns)
    for group in groups:
        key = [str(group["key"][name]) for name in keys]
        cells = [mean_std(group["metrics"].get(name)) for name in columns]
        tests = [significance(_test_of(c, group["key"], headline)) for c in tested]
        table.add_row(*key, str(seeds_of(group)), *cells, str(group["diverged"]), *tests)
    for label, baseline in majority_rows(groups, keys):
        rates = [f"{baseline[m]:.1f}" if _is_number(baseline.get(m)) else "" for m in columns]
        blanks = [""] * (len(keys) - 1)
        table.add_row(label, *blanks, "", *rates, "", *[""] * len(tested), style="dim")
    return table


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def _test_of(
    comparison: dict[str, Any], key: dict[str, Any], metric: str | None
) -> dict[str, Any] | None:
    group = next((g for g in comparison["groups"] if g["key"] == key), None)
    return None if group is None or metric is None else group.get("tests", {}).get(metric)


@app.command()
def compare(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    group_by: GroupByOption = None,
    sweep_id: SweepOption = None,
    baseline: BaselineOption = None,
    metric_prefix: PrefixOption = "test/",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare finished runs: mean ± std over seeds per group (PE by default).

    With --baseline, each group is tested against that PE over shared seeds (paired t-test,
    Holm-corrected); * marks a significant difference.

    Examples:

      loope compare --sweep 3 --baseline none

      loope compare --group-by pe.name --group-by model.arch --json
    """
    params = comparison_params(group_by, sweep_id, baseline, metric_prefix)
    try:
        result = Server(url, token).call("GET", "/compare", params=params)
    except ServerError as error:
        raise fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    console.print(comparison_table(result))


ExportFormat = Literal["csv", "json", "markdown", "latex"]


@app.command()
def export(
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="csv, json, markdown or latex.")
    ] = "markdown",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    group_by: GroupByOption = None,
    sweep_id: SweepOption = None,
    baseline: BaselineOption = None,
    metric_prefix: PrefixOption = "test/",
) -> None:
    """Export the comparison table (as the server renders it) as CSV, JSON, Markdown or LaTeX.

    Examples:

      loope export --sweep 3 --baseline none --format latex -o table.tex

      loope export --format csv --group-by pe.name --group-by dataset.name
    """
    params = comparison_params(group_by, sweep_id, baseline, metric_prefix) | {"format": fmt}
    try:
        text = Server(url, token).text("GET", "/compare/export", params=params)
    except ServerError as error:
        raise fail(str(error)) from None
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.write_text(text)
    except OSError as error:
        raise fail(f"cannot write {output}: {error.strerror or error}") from None
    console.print(f"wrote {output} ({fmt})")
