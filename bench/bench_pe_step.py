"""Step time (forward + backward) of every PE relative to `learnable`, on the same ViT.

Three settings:

- ``--setting tiny-cpu`` (default): the tiny ViT preset (width 64, depth 4) on 32 px
  images, 4 px patches (8x8 grid), batch 32, fp32, one torch thread;
- ``--setting base-cpu``: ViT-B/16 at 224 px (14x14 grid), batch 2, fp32, on the CPU: the
  paper's geometry where no GPU is lent (slow: seconds per step, so name PEs with ``--pe``);
- ``--setting base-cuda``: ViT-B/16 at 224 px, batch 64, bf16 autocast, on a GPU.

Every PE gets the same host (same seed). Steps are timed round-robin over the PEs, one
step per PE per round, so that a change of machine load during the run falls on every PE
alike; each PE's figure is the median of its rounds, after warm-up steps. On the CPU the
clock is the process's CPU time (one thread: the step's own compute, which time-slicing by
other processes on a shared machine does not stretch); wall time is recorded beside it.
On CUDA the clock is wall time between synchronisations. Beside the time, each PE's
floating-point operations per step (matrix products and convolutions, counted by torch's
FlopCounterMode) are given as a ratio to `learnable`: where that ratio is above a target,
no implementation of the PE can meet it on that model. Targets, as a
ratio to `learnable`: frozen PEs within 2 %, loope within 10 %, rotary and attention-bias
PEs within 15 %; the others have none. The load average is recorded next to the figures,
since a shared CPU makes them noisy.

Writes ``bench/results/pe_step_<setting>.json`` and prints a table. Run from the repository
root: ``.venv/bin/python -m bench.bench_pe_step [--setting base-cuda] [--pe loope] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from loope.models import build_model
from loope.pe import PE_REGISTRY, pe_info

RESULTS = Path(__file__).resolve().parent / "results"
BASELINE = "learnable"
FROZEN_TARGET, LOOPE_TARGET, ATTENTION_TARGET = 1.02, 1.10, 1.15


@dataclass(frozen=True)
class Setting:
    """One benchmark setting: the device, the model, its input and the precision."""

    device: str
    size: str
    img_size: int
    patch_size: int
    batch: int
    bf16: bool


SETTINGS = {
    "tiny-cpu": Setting("cpu", size="tiny", img_size=32, patch_size=4, batch=32, bf16=False),
    "base-cpu": Setting("cpu", size="base", img_size=224, patch_size=16, batch=2, bf16=False),
    "base-cuda": Setting("cuda", size="base", img_size=224, patch_size=16, batch=64, bf16=True),
}


def target(pe: str) -> float | None:
    """The ratio to `learnable` a PE should stay within, or None where there is no target."""
    info = pe_info(pe)
    if pe == "loope":
        return LOOPE_TARGET
    if info.kind in ("rotary", "attention-bias"):
        return ATTENTION_TARGET
    if info.kind in ("additive", "none") and not info.trainable:
        return FROZEN_TARGET
    return None


def build(pe: str, setting: Setting, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(
        "vit", setting.size, pe, img_size=setting.img_size, patch_size=setting.patch_size,
        num_classes=100,
    )  # fmt: skip
    return model.to(device).train()


def step_seconds(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, setting: Setting
) -> tuple[float, float]:
    """Wall and process CPU time of one forward + backward pass (gradients cleared first)."""
    model.zero_grad(set_to_none=True)
    autocast = (
        torch.autocast(images.device.type, dtype=torch.bfloat16)
        if setting.bf16
        else contextlib.nullcontext()
    )
    synchronise(images.device)
    start, start_cpu = time.perf_counter(), time.process_time()
    with autocast:
        logits = model(images)
    F.cross_entropy(logits.float(), labels).backward()
    synchronise(images.device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def step_flops(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, setting: Setting
) -> int:
    """Floating-point operations of one forward + backward pass, as torch counts them."""
    with FlopCounterMode(display=False) as counter:
        step_seconds(model, images, labels, setting)
    return counter.get_total_flops()


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    setting: Setting, device: torch.device, pes: list[str], repeats: int, warmup: int
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, int]]:
    """(wall, CPU) seconds per step of each PE, `repeats` rounds each, timed round-robin;
    and each PE's operations per step."""
    models = {pe: build(pe, setting, device) for pe in pes}
    generator = torch.Generator().manual_seed(1)
    shape = (setting.batch, 3, setting.img_size, setting.img_size)
    images = torch.randn(shape, generator=generator).to(device)
    labels = torch.randint(0, 100, (setting.batch,), generator=generator).to(device)
    flops = {pe: step_flops(model, images, labels, setting) for pe, model in models.items()}
    for model in models.values():
        for _ in range(warmup):
            step_seconds(model, images, labels, setting)
    times: dict[str, list[tuple[float, float]]] = {pe: [] for pe in models}
    for _ in range(repeats):
        for pe, model in models.items():
            times[pe].append(step_seconds(model, images, labels, setting))
    return times, flops


def summarise(
    times: dict[str, list[tuple[float, float]]], flops: dict[str, int], clock: int
) -> list[dict[str, Any]]:
    """Per PE: median and spread in ms of `clock` (0 wall, 1 CPU), wall median, ratio to
    `learnable`, operations and their ratio, target and whether it is met."""
    baseline = statistics.median(t[clock] for t in times[BASELINE])
    rows = []
    for pe, steps in times.items():
        seconds = [t[clock] for t in steps]
        median = statistics.median(seconds)
        quartiles = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else [median] * 3
        ratio, goal = median / baseline, target(pe)
        rows.append({
            "pe": pe, "kind": pe_info(pe).kind, "median_ms": round(1000 * median, 3),
            "wall_median_ms": round(1000 * statistics.median(t[0] for t in steps), 3),
            "q1_ms": round(1000 * quartiles[0], 3), "q3_ms": round(1000 * quartiles[2], 3),
            "ratio_to_learnable": round(ratio, 4), "flops": flops[pe],
            "flop_ratio_to_learnable": round(flops[pe] / flops[BASELINE], 4), "target_ratio": goal,
            "meets_target": None if goal is None else ratio <= goal,
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'pe':<20}{'kind':<16}{'median ms':>10}{'IQR ms':>22}{'ratio':>8}{'flops':>8}"
        f"{'target':>8}  met"
    ]
    for r in rows:
        goal = f"{r['target_ratio']:.2f}" if r["target_ratio"] else "-"
        met = {True: "yes", False: "NO", None: "-"}[r["meets_target"]]
        spread = f"{r['q1_ms']:.2f}-{r['q3_ms']:.2f}"
        lines.append(
            f"{r['pe']:<20}{r['kind']:<16}{r['median_ms']:>10.2f}{spread:>22}"
            f"{r['ratio_to_learnable']:>8.3f}{r['flop_ratio_to_learnable']:>8.3f}{goal:>8}  {met}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="tiny-cpu")
    parser.add_argument(
        "--pe", action="append", choices=sorted(PE_REGISTRY),
        help=f"a PE to time (repeatable; `{BASELINE}` is always timed); default: every PE",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (at most 200)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per PE (<= 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    args = parser.parse_args()
    repeats, warmup = max(2, min(args.repeats, 200)), max(0, min(args.warmup, 20))
    setting = SETTINGS[args.setting]
    if setting.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--setting {args.setting}: no CUDA device is visible")
    torch.set_num_threads(args.threads)
    device = torch.device(setting.device)
    pes = [pe for pe in PE_REGISTRY if pe == BASELINE or pe in (args.pe or PE_REGISTRY)]

    load_before = os.getloadavg()
    started = time.perf_counter()
    times, flops = measure(setting, device, pes, repeats, warmup)
    clock = 1 if setting.device == "cpu" else 0
    rows = summarise(times, flops, clock)
    result = {
        "benchmark": "pe_step", "setting": args.setting, "device": setting.device,
        "model": f"vit {setting.size}",
        "img_size": setting.img_size, "patch_size": setting.patch_size, "batch": setting.batch,
        "precision": "bf16" if setting.bf16 else "fp32", "threads": torch.get_num_threads(),
        "clock": "process CPU time" if clock else "wall time",
        "repeats": repeats, "warmup": warmup, "wall_s": round(time.perf_counter() - started, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(), "baseline": BASELINE, "pes": rows,
        "gpu": torch.cuda.get_device_name(device) if setting.device == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(),
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"pe_step_{args.setting}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"load average before {result['load_average_before']}, after "
          f"{result['load_average_after']} on {os.cpu_count()} CPUs; wrote {path}")  # fmt: skip


if __name__ == "__main__":
    main()
