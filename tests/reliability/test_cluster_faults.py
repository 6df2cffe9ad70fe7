"""Faults of the cluster around running runs: `kill -9` of the dispatcher, and a Ray restart.

Both start their own Ray head (`ray start --head` on a free port of 127.0.0.1 with its own
temporary folder) and `loope serve` joined to it, put two tiny Three-Cell runs to work at
once, and strike once both have a checkpoint. Each must end with every run SUCCEEDED after
resuming from its checkpoint, every epoch's points stored once per attempt with no attempt
repeating an epoch the run had already checkpointed, and no run left RUNNING.

The dispatcher lives in the server process that `loope serve` supervises, so `kill -9` of
the dispatcher takes the API with it; with a cluster of its own (not a Ray the process
started and took down with it), the runs' workers outlive their owner until Ray or the
restarted service stops them. A Ray driver cannot outlive a restart of its cluster: Ray
aborts it when it meets the new cluster (`WrongClusterID`). In both faults nobody restarts
the service by hand: `loope serve`'s supervisor starts its server process again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from test_end_to_end import _wait_checkpointed_epoch, _wait_final, _wait_healthy

RAY = Path(sys.executable).with_name("ray")
EPOCHS = 3
TINY = {
    "pe": {"name": "sinusoid-1d"},
    "dataset": {"name": "three-cell", "preset": "quick", "n": 300},
    "train": {"epochs": EPOCHS, "batch_size": 32},
}
SEEDS = [11, 12]
# How a lost attempt ends: Ray's node-death error names preemption only as a possible cause,
# which the dispatcher does not take for one.
INFRA_LOSS = "infra_lost"
# `ray start` turns token authentication on when a token file exists (~/.ray/auth_token),
# and the service's driver would then need that token; this cluster is the test's alone.
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}


class RayHead:
    """A Ray head this test starts with `ray start --head --block`, and stops by killing
    exactly the processes that command started."""

    def __init__(self, port: int, temp_dir: Path) -> None:
        self.port, self.temp_dir = port, temp_dir
        self.address = f"127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            str(RAY), "start", "--head", "--block", f"--port={self.port}",
            "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}", "--num-cpus=2",
            "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
            f"--object-store-memory={256 * 2**20}",
        ]  # fmt: skip
        log = (self.temp_dir.parent / "ray-head.log").open("a")
        env = {**os.environ, **RAY_ENV}
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 120
        log = self.temp_dir.parent / "ray-head.log"
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, log.read_text()
            if "Ray runtime started" in log.read_text():
                return
            time.sleep(0.5)
        raise AssertionError(f"the Ray head did not start; see {log}")

    def kill(self) -> None:
        """SIGKILL the head and every process under it: GCS, raylet, workers."""
        if self.process is None:
            return
        for pid in [*_descendants(self.process.pid), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None


def _children(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is `pid`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if int(parent) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (OSError, IndexError):
        return False


def _descendants(pid: int) -> list[int]:
    """Every process under `pid`, read from /proc (children before their own children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Service:
    """`loope serve` in its own process, joined to the test's Ray head."""

    def __init__(self, data_dir: Path, ray_address: str) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.env = {**os.environ, **RAY_ENV, "RAY_ADDRESS": ray_address}
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}/api/v1", timeout=30)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "loope", "serve", "--port", str(self.port),
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        log = self.data_dir / "server.log"
        with log.open("a") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        _wait_healthy(self.client, self.process, log)

    def server_pid(self) -> int | None:
        """The server process (API + dispatcher) that the supervisor runs now, if any."""
        assert self.process is not None
        return next(iter(_children(self.process.pid)), None)

    def wait_server_replaced(self, old_pid: int, timeout_s: float) -> int:
        """Wait until the supervisor runs a server other than `old_pid` and it is healthy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            pid = self.server_pid()
            if pid is not None and pid != old_pid:
                _wait_healthy(self.client, self.process, self.data_dir / "server.log")
                return pid
            time.sleep(0.3)
        raise AssertionError(f"server {old_pid} was not replaced in {timeout_s} s")

    def log_tail(self) -> str:
        return (self.data_dir / "server.log").read_text()[-3000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.client.close()


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """One Ray head for the module (a test may kill and restart it); killed at the end."""
    # Ray's socket paths must stay short, so its folder is not under pytest's tmp_path.
    temp_dir = Path(tempfile.mkdtemp(prefix="loope-ray-", dir="/tmp"))
    head = RayHead(free_port(), temp_dir / "ray")
    head.temp_dir.mkdir()
    try:
        head.start()
        yield head
    finally:
        head.kill()
        shutil.copy(temp_dir / "ray-head.log", tmp_path_factory.mktemp("ray") / "ray-head.log")
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def cluster(ray_head: RayHead, tmp_path: Path) -> Iterator[tuple[RayHead, Service]]:
    """The module's Ray head and a fresh service joined to it, stopped afterwards."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    service = Service(data_dir, ray_head.address)
    try:
        service.start()
        yield ray_head, service
    finally:
        service.stop()


def _start_runs(service: Service) -> list[int]:
    """Two runs running at once, each past its first checkpoint."""
    body = {"spec": TINY, "seeds": SEEDS, "policy": "force-new"}
    run_ids = service.client.post("/specs", json=body).json()["created"]
    for run_id in run_ids:
        _wait_checkpointed_epoch(service.client, service.data_dir, run_id, 1)
    statuses = [service.client.get(f"/runs/{r}").json()["status"] for r in run_ids]
    assert statuses == ["RUNNING"] * len(run_ids), statuses
    return run_ids


def _assert_every_run_resumed_once_per_epoch(service: Service, run_ids: list[int]) -> None:
    """SUCCEEDED after a resume; per attempt each epoch's points once, and no attempt
    repeating an epoch before the one it resumed from."""
    for run_id in run_ids:
        run = _wait_final(service.client, run_id)
        assert run["status"] == "SUCCEEDED", run["failure_reason"]
        assert run["attempt"] >= 2 and run["attempts"][0]["exit_reason"].startswith(INFRA_LOSS)
        resumed = run["attempts"][-1]["resumed_from_epoch"]
        assert resumed is not None and resumed >= 1, run["attempts"]
        epochs = service.client.get(f"/runs/{run_id}/metrics/epoch").json()
        assert epochs["values"] == list(range(1, EPOCHS + 1))
        assert len(set(epochs["steps"])) == EPOCHS
        rows = _stored_points(service.data_dir, run_id)
        points = [(attempt, key, step) for attempt, key, step, _ in rows]
        assert len(points) == len(set(points)), "a point was stored twice"
        last = run["attempt"]
        again = sorted(int(v) for attempt, key, _, v in rows if attempt == last and key == "epoch")
        assert again == list(range(resumed + 1, EPOCHS + 1))
        earlier = {int(v) for attempt, key, _, v in rows if attempt < last and key == "epoch"}
        assert set(range(1, resumed + 1)) <= earlier
    assert service.client.get("/health").json()["runs"] == {"SUCCEEDED": len(run_ids)}


def _stored_points(data_dir: Path, run_id: int) -> list[tuple[int, str, int, float]]:
    """(attempt, key, step, value) of every point the run's attempts stored; the `epoch`
    key's value is the epoch, its step the batch count."""
    with sqlite3.connect(data_dir / "loope.db") as db:
        query = "SELECT attempt, key, step, value FROM metric_points WHERE run_id = ?"
        return [tuple(row) for row in db.execute(query, (run_id,))]


@pytest.mark.timeout(300)
def test_kill_9_of_the_dispatcher_with_runs_running_resumes_every_run(
    cluster: tuple[RayHead, Service],
) -> None:
    _, service = cluster
    run_ids = _start_runs(service)
    server = service.server_pid()
    assert server is not None
    os.kill(server, signal.SIGKILL)
    service.wait_server_replaced(server, timeout_s=120)
    _assert_every_run_resumed_once_per_epoch(service, run_ids)
    for run_id in run_ids:
        first = service.client.get(f"/runs/{run_id}").json()["attempts"][0]
        assert "service restarted" in first["exit_reason"]
    assert "the server died (killed by SIGKILL); restarting it" in service.log_tail()


SUPERVISOR_PATIENCE_S = 150


@pytest.mark.timeout(300)
def test_a_ray_restart_with_runs_running_resumes_every_run(
    cluster: tuple[RayHead, Service],
) -> None:
    head, service = cluster
    run_ids = _start_runs(service)
    server = service.server_pid()
    assert server is not None
    head.kill()
    head.start()
    service.wait_server_replaced(server, timeout_s=SUPERVISOR_PATIENCE_S)
    _assert_every_run_resumed_once_per_epoch(service, run_ids)
    assert "the server died (" in service.log_tail()


@pytest.mark.timeout(180)
def test_the_supervisor_restarts_a_killed_server_and_takes_it_down_when_killed(
    cluster: tuple[RayHead, Service],
) -> None:
    _, service = cluster
    first = service.server_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    second = service.wait_server_replaced(first, timeout_s=120)
    assert service.client.get("/health").status_code == 200
    assert service.process is not None
    service.process.kill()
    service.process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(second) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(second), f"server {second} outlived its supervisor"
