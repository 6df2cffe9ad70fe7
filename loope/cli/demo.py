"""`loope demo`: the Three-Cell PE comparison through an embedded service, start to finish."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loope.cli.app import app
from loope.cli.client import ServerError, comparison_table, request, submit_file

console = Console(width=None if sys.stdout.isatty() else 120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FINAL = {"SUCCEEDED", "FAILED", "DIVERGED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(data_dir: Path, port: int, num_cpus: int, log_file: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "loope", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(data_dir), "--num-cpus", str(num_cpus),
    ]  # fmt: skip
    with log_file.open("w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServerError(f"the server exited with code {server.returncode}")
        try:
            request(url, "GET", "/health")
            return
        except ServerError:
            time.sleep(0.5)
    raise ServerError(f"the server did not answer within {timeout_s:.0f} s")


def follow(url: str, run_ids: list[int], timeout_s: float) -> list[dict[str, Any]]:
    """Show one progress bar of finished runs until all have ended; returns the runs."""
    deadline = time.monotonic() + timeout_s
    with Progress(
        TextColumn("runs"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("runs", total=len(run_ids), state="")
        seen: dict[int, str] = {}
        while True:
            runs = [r for r in request(url, "GET", "/runs", params={"limit": 1000})["runs"]
                    if r["id"] in run_ids]  # fmt: skip
            for run in runs:
                if seen.get(run["id"]) != run["status"] and not console.is_terminal:
                    name = f"run {run['id']} {run['pe']} seed {run['seed']}"
                    console.print(f"{name}: {run['status']}")
                seen[run["id"]] = run["status"]
            done = [r for r in runs if r["status"] in FINAL]
            state = ", ".join(f"{r['pe']}:{r['status'].lower()}" for r in runs)
            progress.update(task, completed=len(done), state=state)
            if len(done) == len(run_ids):
                return runs
            if time.monotonic() > deadline:
                raise ServerError(f"runs still unfinished after {timeout_s:.0f} s")
            time.sleep(2)


@app.command()
def demo(
    sweep_file: Annotated[Path, typer.Option(help="The sweep to run.")] = EXAMPLES
    / "three_cell_quick.yaml",
    data_dir: Annotated[Path | None, typer.Option(help="Keep the database here.")] = None,
    num_cpus: Annotated[int, typer.Option(help="CPUs of the local Ray.")] = os.cpu_count() or 2,
    timeout_s: Annotated[float, typer.Option(help="Give up after this long.")] = 3600,
) -> None:
    """Start an embedded service, run the Three-Cell sweep, print the comparison, stop.

    Example: loope demo --data-dir demo-data
    """
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="loope-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    console.print(f"starting the service on {url} (data in {data_dir})")
    server = start_server(data_dir, port, num_cpus, data_dir / "server.log")
    try:
        wait_healthy(url, server)
        submitted = submit_file(url, sweep_file, None)
        run_ids = submitted["created"] + submitted["reused"] + submitted["skipped"]
        console.print(f"submitted {len(run_ids)} runs from {sweep_file.name}")
        runs = follow(url, run_ids, timeout_s)
        sweep = submitted["sweep_id"]
        params = {"group_by": ["pe.name"], **({"sweep_id": sweep} if sweep else {})}
        console.print(comparison_table(request(url, "GET", "/compare", params=params)))
    except ServerError as error:
        console.print(f"[red]error:[/red] {error} (server log: {data_dir / 'server.log'})")
        raise typer.Exit(code=1) from None
    finally:
        server.terminate()
        server.wait(timeout=60)
    failed = [r for r in runs if r["status"] != "SUCCEEDED"]
    for run in failed:
        console.print(f"run {run['id']} ({run['pe']}) {run['status']}: {run['failure_reason']}")
    console.print(f"wall time {time.monotonic() - started:.0f} s")
    if failed:
        raise typer.Exit(code=1)
