"""The whole product once: `loope serve` (uvicorn, SQLite file, local Ray) trains over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

TINY = {
    "pe": {"name": "loope"},
    "dataset": {"name": "three-cell", "preset": "quick", "n": 300},
    "train": {"epochs": 2, "batch_size": 32},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data_dir = tmp_path_factory.mktemp("served")
    port = _free_port()
    command = [
        sys.executable, "-m", "loope", "serve", "--port", str(port),
        "--data-dir", str(data_dir), "--num-cpus", "2",
    ]  # fmt: skip
    log = (data_dir / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30)
    try:
        _wait_healthy(client, server, data_dir / "server.log")
        yield client
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=60)
        log.close()


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
