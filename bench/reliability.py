"""Reliability report: faults, hostile input and load against real servers on 127.0.0.1.

    python bench/reliability.py                     # everything, then bench/reliability.md
    python bench/reliability.py --skip-suite        # only the load scenario
    python bench/reliability.py --clients 20 --seconds 10

1. The fault, duplicate, input and security scenarios are the tests of tests/reliability/
   (kill -9 of the dispatcher and a Ray restart with runs running, private runs among them)
   and the kill -9 tests of tests/test_end_to_end.py; they run under pytest and each test's
   outcome and time goes into the report, the headline scenarios first.
2. Load: an API server in its own process (SQLite file, no dispatcher, auth off on
   loopback) and `--clients` concurrent clients for `--seconds`, mixing submissions (with
   idempotency keys), metric ingest and reads. Every answer must be 2xx; at the end every
   ingested point is counted back through the API.

The CPU is shared, so the report records the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "bench" / "reliability.md"
SUITE = [
    "tests/reliability",
    "tests/test_end_to_end.py::test_kill_9_of_the_worker_mid_run_resumes_and_succeeds",
    "tests/test_end_to_end.py::test_killing_and_restarting_the_service_mid_run_loses_nothing",
]
# The headline faults and checks, each with the test that proves it.
HEADLINES = [
    ("kill -9 of a worker mid-epoch", "test_kill_9_of_the_worker_mid_run"),
    # The dispatcher runs inside the API server's process: killing one kills both.
    (
        "kill -9 of `loope serve` (supervisor + server), its own local Ray, 1 run",
        "test_killing_and_restarting_the_service",
    ),
    (
        "kill -9 of the dispatcher + API server, restarted by `loope serve`, 2 runs",
        "test_kill_9_of_the_dispatcher_with_runs",
    ),
    (
        "Ray head killed and restarted, server restarted by `loope serve`, 2 runs",
        "test_a_ray_restart_with_runs_running",
    ),
    (
        "kill -9 of the server restarts it; kill -9 of `loope serve` ends it",
        "test_the_supervisor_restarts_a_killed_server",
    ),
    ("32 concurrent writers on SQLite", "test_32_concurrent_writers"),
    ("API unreachable for 30 s", "test_a_worker_keeps_its_points_while_the_api_is_away"),
    ("two dispatchers never start one run", "test_two_dispatchers_never_claim_the_same_run"),
    ("private runs unreadable by others", "test_private_runs_are_read_only_by_their_owner"),
]
SPEC = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}
POINTS_PER_BATCH = 100
RUN_POOL = 20


@dataclass
class SuiteResult:
    """One pytest case: its id, outcome and seconds."""

    name: str
    outcome: str
    seconds: float
    message: str = ""


@dataclass
class LoadStats:
    """Latencies (seconds) and failures per endpoint, and the points sent per run."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    points_sent: dict[int, int] = field(default_factory=dict)
    submissions: int = 0


def run_suite(targets: list[str]) -> list[SuiteResult]:
    """Run the scenario tests under pytest; read each case's outcome from its JUnit XML."""
    with tempfile.TemporaryDirectory() as folder:
        junit = Path(folder) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={junit}", *targets]  # fmt: skip
        subprocess.run(command, cwd=ROOT, check=False)
        return _read_junit(junit)


def _read_junit(path: Path) -> list[SuiteResult]:
    results = []
    for case in ElementTree.parse(path).iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome, message = tag, (found.get("message") or "")[:160]
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        results.append(SuiteResult(name, outcome, float(case.get("time", 0)), message))
    return results


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(port: int, data_dir: Path) -> None:
    """The API alone (no dispatcher), for the load scenario's server process."""
    import uvicorn

    from api.app import create_app
    from service.settings import Settings

    app = create_app(Settings(data_dir=data_dir, port=port), dispatch=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_server(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, __file__, "--serve", str(port), str(data_dir)]
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api/v1"
    deadline = time.monotonic() + 300  # imports are slow on a busy machine
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(f"{url}/health", timeout=2).raise_for_status()
            return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"load server did not start; see {data_dir / 'server.log'}")


async def _timed(stats: LoadStats, label: str, request: asyncio.Future) -> httpx.Response | None:
    began = time.perf_counter()
    try:
        response = await request
    except httpx.HTTPError as error:
        stats.errors[label] = stats.errors.get(label, 0) + 1
        stats.error_samples.append(f"{label}: {error!r}"[:200])
        return None
    stats.latencies.setdefault(label, []).append(time.perf_counter() - began)
    if response.status_code >= 400:
        stats.errors[label] = stats.errors.get(label, 0) + 1
        stats.error_samples.append(f"{label}: {response.status_code} {response.text[:120]}")
    return response


async def _client(
    number: int, url: str, run_ids: list[int], until: float, stats: LoadStats
) -> None:
    """One client: 40% ingest, 20% submit, 40% reads, until the deadline."""
    rng, step, submitted = random.Random(number), 0, 0
    key = f"load/client-{number}"
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while time.monotonic() < until:
            roll, run_id = rng.random(), rng.choice(run_ids)
            if roll < 0.4:
                points = [{"key": key, "step": step + i, "value": rng.random()}
                          for i in range(POINTS_PER_BATCH)]  # fmt: skip
                body = {"attempt": 1, "points": points}
                answer = await _timed(stats, "POST /runs/{id}/metrics",
                                      http.post(f"/runs/{run_id}/metrics", json=body))  # fmt: skip
                if answer is not None and answer.status_code == 200:
                    stats.points_sent[run_id] = stats.points_sent.get(run_id, 0) + len(points)
                    step += POINTS_PER_BATCH
            elif roll < 0.6:
                body = {"spec": SPEC, "seeds": [10_000 + number * 100_000 + submitted]}
                headers = {"Idempotency-Key": f"load-{number}-{submitted}"}
                answer = await _timed(stats, "POST /specs",
                                      http.post("/specs", json=body, headers=headers))  # fmt: skip
                if answer is not None and answer.status_code == 201:
                    stats.submissions += 1
                submitted += 1
            elif roll < 0.75:
                await _timed(stats, "GET /runs", http.get("/runs", params={"limit": 50}))
            elif roll < 0.9:
                await _timed(stats, "GET /runs/{id}", http.get(f"/runs/{run_id}"))
            else:
                await _timed(stats, "GET /runs/{id}/metrics/{key}",
                             http.get(f"/runs/{run_id}/metrics/{key}"))  # fmt: skip


async def _load(url: str, clients: int, seconds: float) -> tuple[LoadStats, list[int]]:
    stats = LoadStats()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        answer = await http.post("/specs", json={"spec": SPEC, "seeds": list(range(RUN_POOL))})
        run_ids = answer.json()["created"]
    until = time.monotonic() + seconds
    await asyncio.gather(*(_client(n, url, run_ids, until, stats) for n in range(clients)))
    return stats, run_ids


def count_points(url: str, run_ids: list[int], clients: int) -> dict[int, int]:
    """Points stored per run, read back through the API's series route."""
    stored = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        for run_id in run_ids:
            total = 0
            for number in range(clients):
                series = http.get(f"/runs/{run_id}/metrics/load/client-{number}",
                                  params={"max_points": 100_000})  # fmt: skip
                total += len(series.json()["steps"])
            stored[run_id] = total
    return stored


def run_load(clients: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(Path(folder))
        try:
            began = time.monotonic()
            stats, run_ids = asyncio.run(_load(url, clients, seconds))
            elapsed = time.monotonic() - began
            stored = count_points(url, run_ids, clients)
            runs_total = httpx.get(f"{url}/health", timeout=30).json()["runs"]
        finally:
            process.terminate()
            process.wait(timeout=60)
    return {"stats": stats, "stored": stored, "elapsed": elapsed, "runs": runs_total}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


LoadAverages = tuple[tuple[float, ...], tuple[float, ...]]


def write_report(
    suite: list[SuiteResult] | None,
    load: dict[str, object] | None,
    args: argparse.Namespace,
    loads: LoadAverages,
) -> str:
    now = dt.datetime.now(dt.UTC)
    lines = [
        "# Reliability report",
        "",
        f"Generated by `python bench/reliability.py` on {now:%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs shared with other work; load average (1, 5, 15 min) "
        f"{_fmt_load(loads[0])} before and {_fmt_load(loads[1])} after.",
        "",
    ]
    if suite is not None:
        lines += _suite_table(suite)
    if load is not None:
        lines += _load_table(load, args)
    return "\n".join(lines) + "\n"


def _fmt_load(values: tuple[float, ...]) -> str:
    return " / ".join(f"{v:.1f}" for v in values)


def _headline_table(suite: list[SuiteResult]) -> list[str]:
    """One row per headline scenario: its cases (one per database where parametrised)."""
    lines = ["| scenario | test | passed | seconds |", "| --- | --- | ---: | ---: |"]
    for title, prefix in HEADLINES:
        cases = [r for r in suite if r.name.split("::")[-1].startswith(prefix)]
        if not cases:
            lines.append(f"| {title} | `{prefix}…` | not run | |")
            continue
        passed = sum(r.outcome == "passed" for r in cases)
        seconds = " / ".join(f"{r.seconds:.1f}" for r in cases)
        lines.append(f"| {title} | `{cases[0].name.split('[')[0]}` | {passed} of {len(cases)} "
                     f"| {seconds} |")  # fmt: skip
    return lines + [""]


def _suite_table(suite: list[SuiteResult]) -> list[str]:
    passed = sum(r.outcome == "passed" for r in suite)
    lines = [
        "## Faults, duplicates, bad input, security (pytest)",
        "",
        f"{passed} of {len(suite)} scenarios passed.",
        "",
        *_headline_table(suite),
        "Every case:",
        "",
        "| scenario | result | seconds |",
        "| --- | --- | ---: |",
    ]
    for result in suite:
        outcome = result.outcome + (f": {result.message}" if result.message else "")
        lines.append(f"| `{result.name}` | {outcome.replace('|', '/')} | {result.seconds:.1f} |")
    return lines + [""]


def _load_table(load: dict[str, object], args: argparse.Namespace) -> list[str]:
    stats = load["stats"]
    assert isinstance(stats, LoadStats)
    stored = load["stored"]
    assert isinstance(stored, dict)
    sent, kept = sum(stats.points_sent.values()), sum(stored.values())
    lost = {
        r: (stats.points_sent.get(r, 0), stored[r])
        for r in stored
        if stats.points_sent.get(r, 0) != stored[r]
    }
    errors = sum(stats.errors.values())
    lines = [
        f"## Load: {args.clients} concurrent clients for {args.seconds:.0f} s",
        "",
        "One API process (uvicorn, SQLite file, no dispatcher) on 127.0.0.1; clients in one "
        "asyncio process: 40% metric batches of 100 points, 20% submissions with an "
        "idempotency key, 40% reads.",
        "",
        "| endpoint | requests | errors | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label in sorted(stats.latencies):
        times = stats.latencies[label]
        p50, p99 = 1000 * _percentile(times, 0.5), 1000 * _percentile(times, 0.99)
        failed = stats.errors.get(label, 0)
        lines.append(f"| `{label}` | {len(times)} | {failed} | {p50:.0f} | {p99:.0f} |")
    lines += [
        "",
        f"- errors: {errors}" + (f" (first: {stats.error_samples[:3]})" if errors else ""),
        f"- metric points acknowledged: {sent}; stored and read back: {kept}; "
        f"runs whose counts differ: {len(lost)}" + (f" {lost}" if lost else ""),
        f"- submissions acknowledged: {stats.submissions}; "
        f"runs by status at the end: {load['runs']}",
        f"- wall time of the load phase: {load['elapsed']:.1f} s",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--skip-suite", action="store_true", help="only the load scenario")
    parser.add_argument("--skip-load", action="store_true", help="only the pytest scenarios")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]))
        return
    before = os.getloadavg()
    suite = None if args.skip_suite else run_suite(SUITE)
    load = None if args.skip_load else run_load(args.clients, args.seconds)
    report = write_report(suite, load, args, (before, os.getloadavg()))
    REPORT.write_text(report)
    sys.stdout.write(report)


if __name__ == "__main__":
    main()
