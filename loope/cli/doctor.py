"""`loope doctor`: can this installation run every PE on every architecture family?

Builds every (family × PE) pair at the family's tiny size on the chosen device, runs a
forward and a backward pass, and prints a matrix of ok (with the median step time),
failed (with the error) and unsupported (a pair the family declares it cannot host). It
exits with status 1 if any supported pair fails: the check to run on a new GPU node.

Torch is imported inside the command, so `loope --help` stays fast.
"""

from __future__ import annotations

import json
import statistics
import time
import traceback
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from loope.cli.app import app

if TYPE_CHECKING:
    import torch

Outcome = Literal["ok", "failed", "unsupported"]
DoctorDevice = Literal["cpu", "cuda"]

IMAGE_SIZE = 32  # 8x8 patches of 4 px; CrossViT's large branch: 4x4 of 8 px
PATCH_SIZE = 4
BATCH = 2
TIMED_STEPS = 3  # after one warm-up step


@dataclass(frozen=True)
class PairCheck:
    """How one (family, PE) pair fared: its outcome, median step time and the error if any."""

    arch: str
    pe: str
    outcome: Outcome
    step_ms: float | None = None
    error: str | None = None


def check_pair(arch: str, pe: str, device: torch.device) -> PairCheck:
    """Build `arch` (tiny) with `pe` on `device`, then time forward + backward steps."""
    from loope.models import build_model, supports

    reason = supports(arch, pe)
    if reason is not None:
        return PairCheck(arch, pe, "unsupported", error=reason)
    try:
        model = build_model(
            arch, "tiny", pe, img_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_classes=10
        ).to(device)
        times = [_step_seconds(model, device) for _ in range(1 + TIMED_STEPS)][1:]
    except Exception as error:  # noqa: BLE001  (the doctor reports any failure of a pair)
        last = traceback.extract_tb(error.__traceback__)[-1]
        where = f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
        return PairCheck(arch, pe, "failed", error=f"{type(error).__name__}: {error}{where}")
    return PairCheck(arch, pe, "ok", step_ms=1000 * statistics.median(times))


def _step_seconds(model: torch.nn.Module, device: torch.device) -> float:
    """One forward + backward pass on random images; raises if the output is not finite."""
    import torch

    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    _synchronise(device)
    start = time.perf_counter()
    out = model(images)
    out.square().mean().backward()
    _synchronise(device)
    elapsed = time.perf_counter() - start
    if not torch.isfinite(out).all():
        raise FloatingPointError("non-finite output")
    model.zero_grad(set_to_none=True)
    return elapsed


def _synchronise(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def render_matrix(checks: list[PairCheck]) -> str:
    """PEs as rows, families as columns: step time in ms, FAIL or n/a; then the errors."""
    archs = list(dict.fromkeys(c.arch for c in checks))
    pes = list(dict.fromkeys(c.pe for c in checks))
    cell = {(c.arch, c.pe): c for c in checks}
    first = max(len(p) for p in pes) + 2
    widths = [max(len(a), 7) + 2 for a in archs]
    lines = [" " * first + "".join(f"{a:>{w}}" for a, w in zip(archs, widths, strict=True))]
    for pe in pes:
        cells = [f"{_cell(cell[a, pe]):>{w}}" for a, w in zip(archs, widths, strict=True)]
        lines.append(f"{pe:<{first}}" + "".join(cells))
    failed = [c for c in checks if c.outcome == "failed"]
    lines += [f"FAILED {c.arch} x {c.pe}: {c.error}" for c in failed]
    ok = sum(c.outcome == "ok" for c in checks)
    lines.append(
        f"{ok} ok, {len(failed)} failed, {len(checks) - ok - len(failed)} unsupported "
        "(cells: median forward+backward ms at tiny size; n/a: declared unsupported)"
    )
    return "\n".join(lines)


def _cell(check: PairCheck) -> str:
    if check.outcome == "ok":
        return f"{check.step_ms:.1f}"
    return "FAIL" if check.outcome == "failed" else "n/a"


@app.command("doctor")
def doctor(
    device: Annotated[
        str, typer.Option("--device", help="cpu or cuda: where to build and run the pairs.")
    ] = "cpu",
    arch: Annotated[
        list[str] | None, typer.Option("--arch", help="Only these families (repeatable).")
    ] = None,
    pe: Annotated[
        list[str] | None, typer.Option("--pe", help="Only these PEs (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run every (family x PE) pair at tiny size: forward, backward, step time.

    Examples:

      loope doctor

      loope doctor --device cuda --arch vit --pe loope --pe rope-axial --json
    """
    import torch

    from loope.models import FAMILIES
    from loope.pe import PE_REGISTRY

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"device {device!r}: choose cpu or cuda", param_hint="--device")
    if device == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device is visible", param_hint="--device")
    archs, pes = _chosen("--arch", arch, list(FAMILIES)), _chosen("--pe", pe, list(PE_REGISTRY))
    torch.manual_seed(0)
    checks = [check_pair(a, p, torch.device(device)) for a in archs for p in pes]
    if as_json:
        typer.echo(json.dumps({"device": device, "pairs": [asdict(c) for c in checks]}))
    else:
        typer.echo(render_matrix(checks))
    if any(c.outcome == "failed" for c in checks):
        raise typer.Exit(1)


def _chosen(option: str, given: list[str] | None, known: list[str]) -> list[str]:
    unknown = sorted(set(given or ()) - set(known))
    if unknown:
        raise typer.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(known)}", param_hint=option
        )
    return list(given) if given else known
