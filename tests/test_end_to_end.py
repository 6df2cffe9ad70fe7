"""The whole product once: `loope serve` (uvicorn, SQLite file, local Ray) trains over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loope.train import CHECKPOINT_NAME

TINY = {
    "pe": {"name": "loope"},
    "dataset": {"name": "three-cell", "preset": "quick", "n": 300},
    "train": {"epochs": 2, "batch_size": 32},
}


SERVED_DIRS: list[Path] = []


def _start_server(data_dir: Path, port: int) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "loope", "serve", "--port", str(port),
        "--data-dir", str(data_dir), "--num-cpus", "2",
    ]  # fmt: skip
    log = (data_dir / "server.log").open("a")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data_dir = tmp_path_factory.mktemp("served")
    SERVED_DIRS.append(data_dir)
    port = _free_port()
    server = _start_server(data_dir, port)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30)
    try:
        _wait_healthy(client, server, data_dir / "server.log")
        yield client
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(client: httpx.Client, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            client.get("/health").raise_for_status()
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError("server did not become healthy")


def _wait_final(client: httpx.Client, run_id: int, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.get(f"/runs/{run_id}").json()
        if run["status"] not in ("QUEUED", "RUNNING"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {run['status']} after {timeout_s} s")


def test_three_cell_run_succeeds_and_its_metrics_come_back(served: httpx.Client) -> None:
    [run_id] = served.post("/specs", json={"spec": TINY}).json()["created"]
    run = _wait_final(served, run_id)
    assert run["status"] == "SUCCEEDED", run["failure_reason"]
    assert run["attempts"][0]["resumed_from_epoch"] is None
    for group in ("distance", "orientation", "area", "vector_sum", "average"):
        assert 0 <= run["summary"][f"test/{group}"] <= 100
        assert f"baseline/{group}" in run["summary"]
    loss = served.get(f"/runs/{run_id}/metrics/train/loss").json()
    assert len(loss["steps"]) == 2 and all(isinstance(v, float) for v in loss["values"])
    comparison = served.get("/compare", params={"group_by": "pe.name"}).json()
    [group] = [g for g in comparison["groups"] if g["key"]["pe.name"] == "loope"]
    assert group["metrics"]["average"]["n"] == 1


def test_a_run_whose_code_fails_ends_failed_with_the_error(served: httpx.Client) -> None:
    broken = {**TINY, "model": {"patch_size": 5}}  # 5 does not divide the 32 px image
    [run_id] = served.post("/specs", json={"spec": broken}).json()["created"]
    run = _wait_final(served, run_id)
    assert run["status"] == "FAILED"
    assert run["failure_kind"] == "user_code"
    assert "patch_size=5 must divide img_size=32" in run["failure_reason"]


RESUMABLE = {**TINY, "train": {"epochs": 4, "batch_size": 32}}


def _worker_pid(data_dir: Path, run_id: int, attempt: int) -> int | None:
    with sqlite3.connect(data_dir / "loope.db") as db:
        row = db.execute(
            "SELECT ray_worker_pid FROM attempts WHERE run_id = ? AND number = ?",
            (run_id, attempt),
        ).fetchone()
    return row[0] if row else None


def _wait_checkpointed_epoch(
    client: httpx.Client, data_dir: Path, run_id: int, epoch: int, timeout_s: float = 300
) -> None:
    """Wait until the run reported `epoch` and its checkpoint is on disk.

    An epoch's metrics are sent before its checkpoint is written, so a kill between the two
    would rightly resume from the epoch before.
    """
    checkpoint = data_dir / "artifacts" / "runs" / str(run_id) / CHECKPOINT_NAME
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        summary = client.get(f"/runs/{run_id}").json().get("summary") or {}
        if summary.get("epoch", 0) >= epoch and checkpoint.exists():
            return
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish and checkpoint epoch {epoch}")


def _assert_resumed_without_duplicates(client: httpx.Client, run: dict) -> None:
    assert run["status"] == "SUCCEEDED", run["failure_reason"]
    assert run["attempt"] == 2 and run["attempts"][0]["exit_reason"]
    assert run["attempts"][1]["resumed_from_epoch"] >= 1
    for key in ("train/loss", "epoch"):
        series = client.get(f"/runs/{run['id']}/metrics/{key}").json()
        assert len(series["steps"]) == len(set(series["steps"])) == 4
    assert client.get(f"/runs/{run['id']}/metrics/epoch").json()["values"] == [1, 2, 3, 4]


def test_kill_9_of_the_worker_mid_run_resumes_and_succeeds(served: httpx.Client) -> None:
    [run_id] = served.post("/specs", json={"spec": RESUMABLE, "seeds": [7]}).json()["created"]
    _wait_checkpointed_epoch(served, SERVED_DIRS[-1], run_id, 1)
    pid = _worker_pid(SERVED_DIRS[-1], run_id, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    run = _wait_final(served, run_id)
    assert run["attempts"][0]["exit_reason"].startswith("infra_lost")
    _assert_resumed_without_duplicates(served, run)


def test_killing_and_restarting_the_service_mid_run_loses_nothing(tmp_path: Path) -> None:
    port = _free_port()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30)
    server = _start_server(tmp_path, port)
    try:
        _wait_healthy(client, server, tmp_path / "server.log")
        [run_id] = client.post("/specs", json={"spec": RESUMABLE, "seeds": [3]}).json()["created"]
        _wait_checkpointed_epoch(client, tmp_path, run_id, 1)
        server.kill()
        server.wait(timeout=60)
        server = _start_server(tmp_path, port)
        _wait_healthy(client, server, tmp_path / "server.log")
        run = _wait_final(client, run_id)
        assert "service restarted" in run["attempts"][0]["exit_reason"]
        _assert_resumed_without_duplicates(client, run)
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=60)
