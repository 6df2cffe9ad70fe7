"""Commands that talk to a loope server over REST: `serve`, `submit`, `runs`, `compare`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from loope.cli.app import app
from loope.spec import load_spec_file

console = Console(width=None if sys.stdout.isatty() else 120)

UrlOption = Annotated[
    str, typer.Option("--url", envvar="LOOPE_URL", help="Address of the loope server.")
]
THREE_CELL_GROUPS = ("distance", "orientation", "area", "vector_sum", "average")


class ServerError(Exception):
    """The server refused a request; the message is what it said, in one line."""


def request(url: str, method: str, path: str, **kwargs: Any) -> Any:
    """Call the REST API and return the JSON body, or raise ServerError with its message."""
    try:
        response = httpx.request(method, f"{url}/api/v1{path}", timeout=60, **kwargs)
    except httpx.TransportError as error:
        raise ServerError(f"cannot reach the loope server at {url}: {error}") from None
    if response.status_code >= 400:
        raise ServerError(f"HTTP {response.status_code}: {_explain(response)}")
    return response.json() if response.content else None


def _explain(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text[:500]
    if isinstance(detail, list):
        return "; ".join(_field_message(item) for item in detail)
    return str(detail)


def _field_message(item: dict[str, Any]) -> str:
    if "field" in item:
        return f"{item['field']}: {item['message']}"
    where = ".".join(str(part) for part in item.get("loc", []))
    return f"{where}: {item.get('msg', item)}"


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    data_dir: Annotated[
        Path, typer.Option(envvar="LOOPE_DATA_DIR", help="Holds the database and artifacts.")
    ] = Path("loope-data"),
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray.")] = None,
    num_gpus: Annotated[int | None, typer.Option(help="GPUs of the local Ray.")] = None,
) -> None:
    """Start the API, the dispatcher and (unless RAY_ADDRESS is set) a local Ray.

    Example: loope serve --data-dir ./loope-data --port 8000
    """
    import os

    import uvicorn

    from api.app import create_app
    from service.settings import Settings

    settings = Settings(
        data_dir=data_dir,
        host=host,
        port=port,
        ray_address=os.environ.get("RAY_ADDRESS", ""),
        ray_num_cpus=num_cpus,
        ray_num_gpus=num_gpus,
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def submit_file(url: str, path: Path, seeds: list[int] | None) -> dict[str, Any]:
    """Submit a spec file (one spec) or a sweep file (a `base` and `axes`)."""
    body = load_spec_file(path)
    if "base" in body:
        if seeds:
            body["seeds"] = seeds
        return request(url, "POST", "/sweeps", json=body)
    wrapped = {"spec": body, "seeds": seeds or [0]}
    return request(url, "POST", "/specs", json=wrapped)


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML or JSON.")],
    url: UrlOption = "http://127.0.0.1:8000",
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, e.g. 0,1,2.")] = None,
) -> None:
    """Submit a spec or a sweep file.

    Example: loope submit examples/three_cell_quick.yaml --seeds 0,1
    """
    seed_list = [int(s) for s in seeds.split(",")] if seeds else None
    try:
        done = submit_file(url, file, seed_list)
    except (ServerError, ValueError) as error:
        raise fail(str(error)) from None
    console.print(
        f"created {len(done['created'])} runs, reused {len(done['reused'])}, "
        f"skipped {len(done['skipped'])} (policy {done['policy']})"
    )


@app.command()
def runs(
    url: UrlOption = "http://127.0.0.1:8000",
    status: Annotated[str | None, typer.Option(help="QUEUED, RUNNING, SUCCEEDED, ...")] = None,
    pe: Annotated[str | None, typer.Option(help="Only runs of this PE.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List runs.

    Example: loope runs --status RUNNING
    """
    params = {k: v for k, v in {"status": status, "pe": pe}.items() if v}
    try:
        page = request(url, "GET", "/runs", params=params)
    except ServerError as error:
        raise fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(page["runs"], indent=2))
        return
    table = Table("id", "status", "pe", "arch", "dataset", "seed", "attempt", "failure")
    for run in page["runs"]:
        failure = run["failure_kind"] or ""
        table.add_row(
            str(run["id"]), run["status"], run["pe"], run["arch"], run["dataset"],
            str(run["seed"]), str(run["attempt"]), failure,
        )  # fmt: skip
    console.print(table)


def _cell(stat: dict[str, Any] | None) -> str:
    if stat is None:
        return "—"
    mean, std = stat["mean"], stat["std"]
    if isinstance(std, str) or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f}"


def comparison_table(comparison: dict[str, Any]) -> Table:
    """Three-Cell groups per PE when present, else every metric, with the majority row."""
    groups = comparison["groups"]
    metric_names = sorted({name for g in groups for name in g["metrics"]})
    columns = [m for m in THREE_CELL_GROUPS if m in metric_names] or [
        m for m in metric_names if not m.startswith("bit") and m != "loss"
    ]
    table = Table(*comparison["group_by"], "n", *columns, "diverged")
    for group in groups:
        key = [str(group["key"][name]) for name in comparison["group_by"]]
        n = max((s["n"] for s in group["metrics"].values()), default=0)
        cells = [_cell(group["metrics"].get(name)) for name in columns]
        table.add_row(*key, str(n), *cells, str(group["diverged"]))
    baseline = next((g["baseline"] for g in groups if g["baseline"]), None)
    if baseline:
        blanks = [""] * (len(comparison["group_by"]) - 1)
        cells = [f"{baseline[name]:.1f}" if name in baseline else "" for name in columns]
        table.add_row("majority rate", *blanks, "", *cells, "", style="dim")
    return table


@app.command()
def compare(
    url: UrlOption = "http://127.0.0.1:8000",
    group_by: Annotated[
        list[str] | None, typer.Option(help="Spec fields to group by (repeatable).")
    ] = None,
    sweep: Annotated[int | None, typer.Option(help="Only runs of this sweep.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare finished runs: mean ± std over seeds per group.

    Example: loope compare --group-by pe.name
    """
    params: dict[str, Any] = {"group_by": group_by or ["pe.name"]}
    if sweep is not None:
        params["sweep_id"] = sweep
    try:
        result = request(url, "GET", "/compare", params=params)
    except ServerError as error:
        raise fail(str(error)) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    console.print(comparison_table(result))
