"""CPU seconds per training epoch of each catalogue PE on the quick Three-Cell preset.

The `make demo` / `make demo-full` time estimates come from these figures: a run costs
about epochs × (train + validation seconds) of one core, and the local Ray runs one run per
core. Process CPU time is measured (not wall time), so a busy shared machine changes the
figures less; on an idle machine wall time per epoch is close to the CPU time.

    .venv/bin/python bench/bench_demo_epochs.py [--n 1200] [--pes none,loope]

Writes bench/results/demo_epochs.json, scaled to the preset's full training split.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from loope.data import three_cell
from loope.pe import PE_REGISTRY
from loope.spec import ExperimentSpec
from loope.train import Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "demo_epochs.json"


def cpu_seconds_per_epoch(pe: str, n: int) -> tuple[float, float]:
    """(train, validation) CPU seconds of one epoch on `n` images of the quick preset."""
    body = {
        "model": {"arch": "vit", "size": "tiny"},
        "pe": {"name": pe},
        "dataset": {"name": "three-cell", "preset": "quick", "n": n},
        "train": {"epochs": 1, "batch_size": 64},
    }
    trainer = Trainer(ExperimentSpec.model_validate(body), seed=0)
    start = time.process_time()
    trainer._train_epoch()
    trained = time.process_time()
    trainer.evaluate(trainer.data.val, "val")
    return trained - start, time.process_time() - trained


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1200, help="images generated per PE")
    parser.add_argument("--pes", default=",".join(PE_REGISTRY))
    args = parser.parse_args()
    torch.set_num_threads(1)
    full_n = three_cell.PRESETS["quick"].n
    scale = full_n / args.n
    rows = {}
    for pe in args.pes.split(","):
        train_s, val_s = cpu_seconds_per_epoch(pe, args.n)
        rows[pe] = {"train_cpu_s": round(train_s * scale, 2), "val_cpu_s": round(val_s * scale, 2)}
        print(pe, rows[pe], f"load {os.getloadavg()[0]:.1f}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {"preset": "quick", "n_full": full_n, "n_measured": args.n, "threads": 1,
              "per_epoch_cpu_s": rows, "load_average_1m_at_end": os.getloadavg()[0]}  # fmt: skip
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
