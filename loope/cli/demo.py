"""`loope demo`: the Three-Cell PE comparison through an embedded service, start to finish."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

from loope.cli.app import app
from loope.cli.client import (
    Server,
    ServerError,
    comparison_params,
    comparison_table,
    request,
    submit_file,
    watch_runs,
)

console = Console(width=None if sys.stdout.isatty() else 160)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 300) -> None:
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


SIGNIFICANCE_BASELINES = ("none", "sinusoid-1d")
"""The PEs every other PE is tested against: no position at all, and the standard ViT PE."""


def print_comparison(server: Server, sweep_id: int | None) -> None:
    """Mean ± std per PE, then paired tests against each baseline PE the sweep ran."""
    plain = server.call("GET", "/compare", params=comparison_params(None, sweep_id, None, "test/"))
    present = {group["key"]["pe.name"] for group in plain["groups"]}
    against = [
        server.call("GET", "/compare", params=comparison_params(None, sweep_id, pe, "test/"))
        for pe in SIGNIFICANCE_BASELINES
        if pe in present
    ]
    console.print(comparison_table(plain, against))
    if against:
        console.print(significance_note(plain))


def significance_note(comparison: dict) -> str:
    """What the "vs X" columns mean, with the degrees of freedom of the smallest group's test."""
    from service.exports import seeds_of

    seeds = min(map(seeds_of, comparison["groups"]), default=0)
    freedom = f"{seeds - 1} degree{'' if seeds == 2 else 's'} of freedom"
    return (
        "vs X: mean difference of the average and Holm-adjusted p of a paired t-test over "
        f"seeds; * = significant at 0.05 (with {seeds} seeds a test has {freedom})."
    )


class StopSignal(BaseException):
    """The demo was asked to stop by a signal (terminal closed, `kill`, `timeout`).

    Like KeyboardInterrupt it is no error of the demo, so it derives from BaseException.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def _stop_on_termination() -> None:
    """Turn SIGTERM and SIGHUP into `StopSignal`, so the service the demo started is stopped too.

    Their default action ends the process at once, leaving the server and its Ray behind.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        raise StopSignal(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)


@app.command()
def demo(
    sweep_file: Annotated[Path, typer.Option(help="The sweep to run.")] = EXAMPLES
    / "three_cell_quick.yaml",
    data_dir: Annotated[Path | None, typer.Option(help="Keep the database here.")] = None,
    num_cpus: Annotated[int, typer.Option(help="CPUs of the local Ray.")] = os.cpu_count() or 2,
    timeout_s: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 7200,
) -> None:
    """Start an embedded service, run a Three-Cell sweep, print the comparison, stop.

    The service (API, dispatcher, local Ray) listens on a free loopback port; its dashboard
    is live while the demo runs. The database stays in --data-dir (a temporary folder by
    default), so `loope serve --data-dir DIR` shows the results again afterwards.

    Examples:

      loope demo

      loope demo --sweep-file examples/three_cell_full.yaml --data-dir demo-full
    """
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="loope-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = Server(f"http://127.0.0.1:{port}")
    started = time.monotonic()
    console.print(f"starting the service on {server.url} (data in {data_dir})")
    process = start_server(data_dir, port, num_cpus, data_dir / "server.log")
    _stop_on_termination()
    try:
        ended = _run_sweep(server, process, sweep_file, timeout_s)
    except ServerError as error:
        console.print(f"[red]error:[/red] {error} (server log: {data_dir / 'server.log'})")
        raise typer.Exit(code=1) from None
    except StopSignal as stop:
        console.print(f"stopped by {stop.name}; stopping the service (data kept in {data_dir})")
        raise typer.Exit(code=128 + stop.signum) from None
    finally:
        process.terminate()
        process.wait(timeout=60)
    failed = [r for r in ended if r["status"] != "SUCCEEDED"]
    for run in failed:
        console.print(f"run {run['id']} ({run['pe']}) {run['status']}: {run['failure_reason']}")
    console.print(f"wall time {time.monotonic() - started:.0f} s")
    console.print(f"see it again: loope serve --data-dir {data_dir}, then http://127.0.0.1:8000/")
    if failed:
        raise typer.Exit(code=1)


def _run_sweep(
    server: Server, process: subprocess.Popen, sweep_file: Path, timeout_s: float
) -> list[dict[str, Any]]:
    wait_healthy(server.url, process)
    console.print(f"dashboard: {server.url}/ (live while the demo runs)")
    submitted = submit_file(server.url, sweep_file, None)
    run_ids = sorted(set(submitted["created"] + submitted["reused"] + submitted["skipped"]))
    console.print(f"submitted {len(run_ids)} runs from {sweep_file.name}")
    ended = watch_runs(server, run_ids, 2.0, timeout_s)
    print_comparison(server, submitted.get("sweep_id"))
    return ended
