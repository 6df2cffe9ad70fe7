"""`loope demo` end to end on a tiny sweep: embedded service, real Ray, real training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
