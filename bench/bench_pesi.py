"""Time PESI on the paper's setting (14x14 grid, D = 768, 60 sectors) on one CPU thread.

Writes the median wall time of a bounded number of repeats to ``bench/results/pesi.json``
and prints it. Run from the repository root: ``.venv/bin/python -m bench.bench_pesi``.
"""

from __future__ import annotations

import os

# Thread limits must be set before numpy loads its BLAS.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from loope.orders import patch_ranks  # noqa: E402
from loope.pesi import pesi  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pesi.json"
TARGET_S = 2.0


def sinusoid_grid(rows: int, cols: int, width: int) -> np.ndarray:
    """The 1-D interleaved sinusoid over raster ranks 1..N, laid out as (h, w, D)."""
    position = patch_ranks("raster", rows, cols).astype(np.float64) + 1.0
    frequency = 10000.0 ** (-2.0 * np.arange(width // 2) / width)  # (D/2,)
    angle = position[:, None] * frequency[None, :]  # (N, D/2)
    pe = np.empty((rows * cols, width))
    pe[:, 0::2], pe[:, 1::2] = np.sin(angle), np.cos(angle)
    return pe.reshape(rows, cols, width)  # (N, D) -> (h, w, D)


def time_pesi(pe_grid: np.ndarray, buckets: int, repeats: int) -> list[float]:
    """Wall time in seconds of each of ``repeats`` PESI runs, after one warm-up run."""
    pesi(pe_grid, buckets)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pesi(pe_grid, buckets)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=25, help="timed runs (at most 200)")
    args = parser.parse_args()
    repeats = max(1, min(args.repeats, 200))
    rows, cols, width, buckets = 14, 14, 768, 60

    pe_grid = sinusoid_grid(rows, cols, width)
    with threadpool_limits(limits=1):
        times = time_pesi(pe_grid, buckets, repeats)
        scores = pesi(pe_grid, buckets)

    report = {
        "benchmark": "pesi",
        "grid": f"{rows}x{cols}",
        "width": width,
        "buckets": buckets,
        "threads": 1,
        "repeats": repeats,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "target_s": TARGET_S,
        "meets_target": statistics.median(times) < TARGET_S,
        "pesi_raster_sinusoid": {name: round(value, 6) for name, value in scores.to_dict().items()},
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
