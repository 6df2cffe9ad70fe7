"""The quality bar on real input, 3 seeds each, one CPU thread, one run at a time.

1. A tiny ViT with a `learnable` PE on scikit-learn's bundled digits (quick recipe) must
   reach at least 90 % test accuracy.
2. On the Three-Cell quick preset (8×8 cells of 4 px, patch 4), `sinusoid-1d` must beat
   `none` by at least 25 points of average test accuracy; `none` should sit at the
   majority rates.

Writes ``bench/results/quality.json`` and ``quality.md`` after every run, so a long
measurement that stops early keeps what it measured. Run from the repository root:
``.venv/bin/python -m bench.bench_quality`` (``--only digits`` or ``--only three-cell``;
``--continue`` keeps what ``quality.json`` holds and measures only the missing runs).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from loope.spec import ExperimentSpec
from loope.train import Trainer

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = (0, 1, 2)
DIGITS_TARGET = 90.0
GAP_TARGET = 25.0
GROUPS = ("distance", "orientation", "area", "vector_sum", "average")

CASES: dict[str, dict[str, Any]] = {
    "digits/learnable": {
        "model": {"arch": "vit", "size": "tiny"},
        "pe": {"name": "learnable"},
        "dataset": {"name": "digits"},
        "train": {"recipe": "quick", "device": "cpu"},
    },
    "three-cell/sinusoid-1d": {
        "model": {"arch": "vit", "size": "tiny"},
        "pe": {"name": "sinusoid-1d"},
        "dataset": {"name": "three-cell", "preset": "quick"},
        "train": {"recipe": "quick", "device": "cpu"},
    },
    "three-cell/none": {
        "model": {"arch": "vit", "size": "tiny"},
        "pe": {"name": "none"},
        "dataset": {"name": "three-cell", "preset": "quick"},
        "train": {"recipe": "quick", "device": "cpu"},
    },
}


def run_case(body: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one spec with one seed; its test metrics, majority baseline and wall time."""
    spec = ExperimentSpec.model_validate(body)
    final: dict[str, float] = {}
    started = time.perf_counter()
    result = Trainer(spec, seed, None, lambda step, metrics: final.update(metrics)).fit()
    return {
        "seed": seed,
        "outcome": result.outcome,
        "test": result.test,
        "baseline": {k: v for k, v in final.items() if k.startswith("baseline/")},
        "wall_s": round(time.perf_counter() - started, 1),
    }


def mean_std(values: list[float]) -> dict[str, float]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 2), "std": round(std, 2), "n": len(values)}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for case, results in runs.items():
        keys = ["test/acc"] + [f"test/{g}" for g in GROUPS if f"test/{g}" in results[0]["test"]]
        summary[case] = {k: mean_std([r["test"][k] for r in results]) for k in keys}
    digits = summary.get("digits/learnable")
    if digits:
        summary["digits_passes"] = digits["test/acc"]["mean"] >= DIGITS_TARGET
    sinusoid, none = summary.get("three-cell/sinusoid-1d"), summary.get("three-cell/none")
    if sinusoid and none:
        gap = sinusoid["test/average"]["mean"] - none["test/average"]["mean"]
        summary["three_cell_gap"] = round(gap, 2)
        summary["three_cell_passes"] = gap >= GAP_TARGET
    return summary


def markdown(runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> str:
    lines = [
        "# Quality bar (test accuracy %, mean ± std over seeds, one CPU thread)",
        "",
        "| case | seeds | acc | distance | orientation | area | vector sum | s/run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case, results in runs.items():
        cells = [
            _cell(summary[case].get(k)) for k in ["test/acc"] + [f"test/{g}" for g in GROUPS[:4]]
        ]
        wall = statistics.fmean(r["wall_s"] for r in results)
        seeds = ",".join(str(r["seed"]) for r in results)
        lines.append(f"| {case} | {seeds} | {' | '.join(cells)} | {wall:.0f} |")
    baseline = next((r[0]["baseline"] for c, r in runs.items() if c.startswith("three")), None)
    if baseline:
        rates = ", ".join(f"{k.removeprefix('baseline/')} {v:.1f}" for k, v in baseline.items())
        lines += ["", f"Three-Cell test-split baseline (majority rates, positives): {rates}"]
    verdicts = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    lines += ["", f"Verdict: {json.dumps(verdicts)}", ""]
    return "\n".join(lines)


def _cell(stat: dict[str, float] | None) -> str:
    return "" if stat is None else f"{stat['mean']:.1f} ± {stat['std']:.1f}"


def write(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary = summarise(runs)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    report = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "commit": commit,
        "specs": {case: CASES[case] for case in runs},
        "runs": runs,
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "quality.md").write_text(markdown(runs, summary))
    return summary


def measured_before() -> dict[str, list[dict[str, Any]]]:
    """The runs already in ``quality.json``, so an interrupted measurement can continue."""
    path = RESULTS / "quality.json"
    return json.loads(path.read_text())["runs"] if path.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("digits", "three-cell"), default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="keep the runs in quality.json and measure only the missing ones",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = measured_before() if args.resume else {}
    for seed in args.seeds:  # seed-major, so an early stop still has every case once
        for case, body in CASES.items():
            done = any(r["seed"] == seed for r in runs.get(case, []))
            if (args.only and not case.startswith(args.only)) or done:
                continue
            outcome = run_case(body, seed)
            runs.setdefault(case, []).append(outcome)
            print(case, seed, outcome["test"].get("test/acc"), f"{outcome['wall_s']} s", flush=True)
            write(runs)
    print(json.dumps(write(runs), indent=2))


if __name__ == "__main__":
    main()
