"""The results service side by side with an MLflow tracking server, both on 127.0.0.1.

Measures metric ingest in 1,000-point batches (points/s), one point per request, a
1,000-run sweep accepted (s), and a comparison over 10,000 finished runs (ms). Both
servers use SQLite in a temporary folder and one worker process; every loop is bounded.
Ingest runs in ROUNDS rounds that alternate loope and MLflow request by request, so both
see the same load; the figures are medians over rounds and the ratio is the median of the
per-round ratios. The
load average is recorded before and after, as the machine may be shared.
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
SINGLES = 100
ROUNDS = 3
SWEEP_REPEATS = 3
COMPARE_RUNS = 10_000
COMPARE_REPEATS = 15
PES = ["none", "learnable", "sinusoid-1d", "hilbert-pe", "loope"]
BASE = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}
THREE_CELL = ("distance", "orientation", "area", "vector_sum", "average")
MLFLOW_API = "/api/2.0/mlflow"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, deadline_s: float = 600.0) -> None:
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
    """10,000 succeeded runs (5 PEs × 2,000 seeds) with Three-Cell summaries, in bulk.

    Values differ between PEs at the same seed, so every paired test is computed.
    """
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
        {"run_id": run_id, "key": key, "last": 50.0 + (run_id * 7919 % 1009) / 100,
         "last_kind": ValueKind.FINITE, "last_step": 100, "best": None, "best_step": None,
         "count": 1}
        for run_id in run_ids
        for key in [*(f"test/{m}" for m in THREE_CELL), "baseline/average", "train/loss"]
    ]  # fmt: skip
    with store.sessions.begin() as session:
        session.execute(update(Run).values(status=RunStatus.SUCCEEDED, attempt=1))
        session.execute(insert(MetricSummary), rows)
    engine.dispose()


def timed(action: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    action(*args)
    return time.perf_counter() - started


def ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.url}: HTTP {response.status_code} {response.text}")
    return response


def loope_sweep_and_compare(http: httpx.Client) -> dict[str, Any]:
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
    tested = [t for g in groups for t in g["tests"].values() if t["p_value"] is not None]
    assert len(tested) == (len(PES) - 1) * len(THREE_CELL), len(tested)
    return {
        "sweep_1000_runs_s_median": statistics.median(sweep_times),
        "sweep_1000_runs_s_all": sweep_times,
        "compare_10000_runs_ms_median": statistics.median(compare_ms),
        "compare_10000_runs_ms_min": min(compare_ms),
        "compare_10000_runs_ms_max": max(compare_ms),
    }


class Ingest:
    """Posts the same batches and single points to loope and MLflow, one run each."""

    def __init__(self, loope: httpx.Client, mlflow: httpx.Client, experiment_id: str, seed: int):
        body = {"spec": BASE, "seeds": [seed]}
        [self.loope_run] = ok(loope.post("/api/v1/specs", json=body)).json()["created"]
        self.now = int(time.time() * 1000)
        body = {"experiment_id": experiment_id, "start_time": self.now}
        created = ok(mlflow.post(f"{MLFLOW_API}/runs/create", json=body)).json()
        self.mlflow_run = created["run"]["info"]["run_id"]
        self.loope, self.mlflow = loope, mlflow

    def loope_batch(self, b: int) -> None:
        points = [{"key": f"m{i % 10}", "step": b * 100 + i // 10, "value": i * 0.5}
                  for i in range(BATCH)]  # fmt: skip
        body = {"attempt": 1, "points": points}
        ok(self.loope.post(f"/api/v1/runs/{self.loope_run}/metrics", json=body))

    def mlflow_batch(self, b: int) -> None:
        metrics = [{"key": f"m{i % 10}", "value": i * 0.5, "timestamp": self.now,
                    "step": b * 100 + i // 10} for i in range(BATCH)]  # fmt: skip
        body = {"run_id": self.mlflow_run, "metrics": metrics}
        ok(self.mlflow.post(f"{MLFLOW_API}/runs/log-batch", json=body))

    def loope_single(self, s: int) -> None:
        point = {"attempt": 1, "points": [{"key": "single", "step": s, "value": 1.0}]}
        ok(self.loope.post(f"/api/v1/runs/{self.loope_run}/metrics", json=point))

    def mlflow_single(self, s: int) -> None:
        body = {"run_id": self.mlflow_run, "key": "single", "value": 1.0,
                "timestamp": self.now, "step": s}  # fmt: skip
        ok(self.mlflow.post(f"{MLFLOW_API}/runs/log-metric", json=body))

    def round(self) -> tuple[dict[str, float], dict[str, float]]:
        """Alternate loope and MLflow request by request, so both meet the same load.

        The first batch of each is a warm-up and is not timed.
        """
        self.loope_batch(BATCHES)
        self.mlflow_batch(BATCHES)
        times = {"loope_batch": 0.0, "mlflow_batch": 0.0, "loope_single": 0.0,
                 "mlflow_single": 0.0}  # fmt: skip
        for b in range(BATCHES):
            times["loope_batch"] += timed(self.loope_batch, b)
            times["mlflow_batch"] += timed(self.mlflow_batch, b)
        for s in range(SINGLES):
            times["loope_single"] += timed(self.loope_single, s)
            times["mlflow_single"] += timed(self.mlflow_single, s)
        return tuple(  # type: ignore[return-value]
            {
                "batch_points_per_s": BATCHES * BATCH / times[f"{name}_batch"],
                "single_points_per_s": SINGLES / times[f"{name}_single"],
            }
            for name in ("loope", "mlflow")
        )


def median_of(rounds: list[dict[str, float]]) -> dict[str, Any]:
    return {name: statistics.median(r[name] for r in rounds) for name in rounds[0]} | {
        "rounds": rounds
    }


def measure(loope: httpx.Client, mlflow: httpx.Client) -> dict[str, Any]:
    """ROUNDS of ingest into both; then loope's sweep and comparison."""
    experiment = ok(mlflow.post(f"{MLFLOW_API}/experiments/create", json={"name": "bench"}))
    experiment_id = experiment.json()["experiment_id"]
    loope_rounds, mlflow_rounds = [], []
    for round_ in range(ROUNDS):
        loope_round, mlflow_round = Ingest(loope, mlflow, experiment_id, 900_000 + round_).round()
        loope_rounds.append(loope_round)
        mlflow_rounds.append(mlflow_round)
    ratios = [
        a["batch_points_per_s"] / b["batch_points_per_s"]
        for a, b in zip(loope_rounds, mlflow_rounds, strict=True)
    ]
    return {
        "loope": median_of(loope_rounds) | loope_sweep_and_compare(loope),
        "mlflow": median_of(mlflow_rounds),
        "batch_ratio_vs_mlflow": statistics.median(ratios),
        "batch_ratio_vs_mlflow_rounds": ratios,
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
        load_before = os.getloadavg()
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{loope_port}", timeout=120) as loope,
            httpx.Client(base_url=f"http://127.0.0.1:{mlflow_port}", timeout=120) as mlflow,
        ):
            figures = measure(loope, mlflow)
        load_after = os.getloadavg()
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = figures["batch_ratio_vs_mlflow"]
    compare_ms = figures["loope"]["compare_10000_runs_ms_median"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "load_average_1_5_15_min": {"before": load_before, "after": load_after},
        **figures,
        "targets": {
            "batch_ratio_vs_mlflow >= 10": ratio >= 10,
            "sweep_1000_runs_s <= 1": figures["loope"]["sweep_1000_runs_s_median"] <= 1.0,
            "compare_10000_runs_ms <= 200": compare_ms <= 200,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
