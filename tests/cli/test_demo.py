"""`loope demo` end to end on a tiny sweep: embedded service, real Ray, real training."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

TINY_SWEEP = {
    "name": "demo-test",
    "base": {
        "pe": {"name": "none"},
        "dataset": {"name": "three-cell", "preset": "quick", "n": 200},
        "train": {"epochs": 1, "batch_size": 32},
    },
    "axes": {"pe.name": ["none", "sinusoid-1d"]},
    "seeds": [0, 1],
}


def test_demo_runs_a_sweep_and_prints_the_comparison_with_tests(tmp_path: Path) -> None:
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump(TINY_SWEEP))
    command = [
        sys.executable, "-m", "loope", "demo", "--sweep-file", str(sweep),
        "--data-dir", str(tmp_path / "data"), "--num-cpus", "2", "--timeout-s", "600",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "dashboard: http://127.0.0.1:" in out
    assert "submitted 4 runs" in out
    for column in ("distance", "orientation", "area", "vector_sum", "average"):
        assert column in out, out
    assert "average vs none" in out and "average vs sinusoid-1d" in out, out
    assert "majority rate" in out and "Traceback" not in out
    assert (tmp_path / "data" / "loope.db").exists()


def test_a_terminated_demo_stops_the_service_it_started(tmp_path: Path) -> None:
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump(TINY_SWEEP | {"seeds": [0]}))
    command = [
        sys.executable, "-m", "loope", "demo", "--sweep-file", str(sweep),
        "--data-dir", str(tmp_path / "data"), "--num-cpus", "1", "--timeout-s", "600",
    ]  # fmt: skip
    demo = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in demo.stdout:  # bounded: the demo ends or prints the submission
        lines.append(line)
        if line.startswith("submitted"):
            break
    url = next(line.split()[-1] for line in lines if line.startswith("dashboard:"))
    demo.send_signal(signal.SIGTERM)
    out = demo.communicate(timeout=120)[0]
    assert demo.returncode == 128 + signal.SIGTERM, "".join(lines) + out
    assert "stopped by SIGTERM; stopping the service" in out
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _answers(url):
        time.sleep(0.5)
    assert not _answers(url), f"the service at {url} outlived the demo"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
