"""The results service side by side with an MLflow tracking server, both on 127.0.0.1.

Measures metric ingest in 1,000-point batches (points/s), one point per request, a
1,000-run sweep accepted (s), and a comparison over 10,000 finished runs (ms). Both
servers use SQLite in a temporary folder and one worker process; every loop is bounded.
MLflow comes from the `bench` extra: `pip install -e '.[bench]'`.

Usage: python bench/bench_service.py [--out bench/results/service.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, update

from loope.spec import ExperimentSpec
from service.db import MetricSummary, Run, RunStatus, ValueKind, make_engine, make_sessionmaker
from service.store import RunRequest, Store

ROOT = Path(__file__).resolve().parents[1]

BATCH = 1000
BATCHES = 30
SINGLES = 300
SWEEP_REPEATS = 3
COMPARE_RUNS = 10_000
COMPARE_REPEATS = 15
PES = ["none", "learnable", "sinusoid-1d", "hilbert-pe", "loope"]
BASE = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}
THREE_CELL = ("distance", "orientation", "area", "vector_sum", "average")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {deadline_s:.0f} s")


def start_loope(data_dir: Path, port: int) -> subprocess.Popen:
    code = (
        "import uvicorn; from api.app import create_app; from service.settings import Settings;"
        f"uvicorn.run(create_app(Settings(data_dir={str(data_dir)!r}, port={port}),"
        f" dispatch=False), host='127.0.0.1', port={port}, log_level='warning')"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def start_mlflow(data_dir: Path, port: int) -> subprocess.Popen:
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [
        mlflow, "server", "--backend-store-uri", f"sqlite:///{data_dir / 'mlflow.db'}",
        "--default-artifact-root", str(data_dir / "mlflow-artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=data_dir, stdout=subprocess.DEVNULL)


def seed_comparison(url: str) -> None:
    """10,000 succeeded runs (5 PEs × 2,000 seeds) with Three-Cell summaries, in bulk."""
    engine = make_engine(url)
    store = Store(make_sessionmaker(engine))
    seeds = range(COMPARE_RUNS // len(PES))
    requests = []
    for pe in PES:
        body = {**BASE, "pe": {"name": pe}}
        spec = ExperimentSpec.model_validate(body)
        requests += [RunRequest(spec, body, seed) for seed in seeds]
    run_ids = store.submit(requests).created
    rows = [
        {"run_id": run_id, "key": key, "last": 50.0 + (run_id * 7919 % 1000) / 100,
         "last_kind": ValueKind.FINITE, "last_step": 100, "best": None, "best_step": None,
         "count": 1}
        for run_id in run_ids
        for key in [*(f"test/{m}" for m in THREE_CELL), "baseline/average", "train/loss"]
    ]  # fmt: skip
    with store.sessions.begin() as session:
        session.execute(update(Run).values(status=RunStatus.SUCCEEDED, attempt=1))
        session.execute(insert(MetricSummary), rows)
    engine.dispose()


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.url}: HTTP {response.status_code} {response.text}")
    return response


def bench_loope(http: httpx.Client) -> dict[str, float]:
    [run_id] = ok(http.post("/api/v1/specs", json={"spec": BASE, "seeds": [123456]})).json()[
        "created"
    ]

    def batches() -> None:
        for b in range(BATCHES):
            points = [{"key": f"m{i % 10}", "step": b * 100 + i // 10, "value": i * 0.5}
                      for i in range(BATCH)]  # fmt: skip
            ok(http.post(f"/api/v1/runs/{run_id}/metrics", json={"attempt": 1, "points": points}))

    def singles() -> None:
        for s in range(SINGLES):
            point = {"attempt": 1, "points": [{"key": "single", "step": s, "value": 1.0}]}
            ok(http.post(f"/api/v1/runs/{run_id}/metrics", json=point))

    batch_s, single_s = timed(batches), timed(singles)
    sweep_times = []
    for repeat in range(SWEEP_REPEATS):
        lrs = [2e-3 + 1e-4 * (i + 10 * repeat) for i in range(10)]  # not the seeded 1e-3
        body = {"base": BASE, "axes": {"pe.name": PES, "train.lr": lrs}, "seeds": list(range(20))}
        started = time.perf_counter()
        created = ok(http.post("/api/v1/sweeps", json=body)).json()["created"]
        sweep_times.append(time.perf_counter() - started)
        assert len(created) == 1000, len(created)
    compare_ms = []
    params = {"group_by": ["pe.name", "model.arch", "dataset.name"], "baseline_pe": "none"}
    for _ in range(COMPARE_REPEATS):
        started = time.perf_counter()
        groups = ok(http.get("/api/v1/compare", params=params)).json()["groups"]
        compare_ms.append(1000 * (time.perf_counter() - started))
    assert sum(len(g["runs"]) for g in groups) == COMPARE_RUNS
    return {
        "batch_points_per_s": BATCHES * BATCH / batch_s,
        "single_points_per_s": SINGLES / single_s,
        "sweep_1000_runs_s_median": statistics.median(sweep_times),
        "sweep_1000_runs_s_all": sweep_times,
        "compare_10000_runs_ms_median": statistics.median(compare_ms),
        "compare_10000_runs_ms_max": max(compare_ms),
    }


def bench_mlflow(http: httpx.Client) -> dict[str, float]:
    api = "/api/2.0/mlflow"
    experiment = ok(http.post(f"{api}/experiments/create", json={"name": "bench"})).json()
    now = int(time.time() * 1000)

    def create_run() -> str:
        body = {"experiment_id": experiment["experiment_id"], "start_time": now}
        return ok(http.post(f"{api}/runs/create", json=body)).json()["run"]["info"]["run_id"]

    run_id = create_run()

    def batches() -> None:
        for b in range(BATCHES):
            metrics = [{"key": f"m{i % 10}", "value": i * 0.5, "timestamp": now,
                        "step": b * 100 + i // 10} for i in range(BATCH)]  # fmt: skip
            ok(http.post(f"{api}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}))

    def singles() -> None:
        for s in range(SINGLES):
            body = {"run_id": run_id, "key": "single", "value": 1.0, "timestamp": now, "step": s}
            ok(http.post(f"{api}/runs/log-metric", json=body))

    batch_s, single_s = timed(batches), timed(singles)
    runs = 100
    create_s = timed(lambda: [create_run() for _ in range(runs)])
    return {
        "batch_points_per_s": BATCHES * BATCH / batch_s,
        "single_points_per_s": SINGLES / single_s,
        "runs_created_per_s": runs / create_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/service.json")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="loope-bench-"))
    processes = []
    try:
        (workdir / "loope").mkdir()
        seed_comparison(f"sqlite:///{workdir / 'loope' / 'loope.db'}")
        loope_port, mlflow_port = free_port(), free_port()
        processes = [start_loope(workdir / "loope", loope_port), start_mlflow(workdir, mlflow_port)]
        wait_ready(f"http://127.0.0.1:{loope_port}/api/v1/health")
        wait_ready(f"http://127.0.0.1:{mlflow_port}/health")
        with httpx.Client(base_url=f"http://127.0.0.1:{loope_port}", timeout=120) as http:
            loope = bench_loope(http)
        with httpx.Client(base_url=f"http://127.0.0.1:{mlflow_port}", timeout=120) as http:
            mlflow = bench_mlflow(http)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = loope["batch_points_per_s"] / mlflow["batch_points_per_s"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "loope": loope,
        "mlflow": mlflow,
        "batch_ratio_vs_mlflow": ratio,
        "targets": {
            "batch_ratio_vs_mlflow >= 10": ratio >= 10,
            "sweep_1000_runs_s <= 1": loope["sweep_1000_runs_s_median"] <= 1.0,
            "compare_10000_runs_ms <= 200": loope["compare_10000_runs_ms_median"] <= 200,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
