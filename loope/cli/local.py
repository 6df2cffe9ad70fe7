"""Commands that run on this machine without a server: `train` and `three-cell`."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from loope.cli.app import app

if TYPE_CHECKING:
    from loope.data.three_cell import ThreeCellConfig
    from loope.spec import ExperimentSpec
    from loope.train import TrainResult

console = Console(width=None if sys.stdout.isatty() else 120)


TRAINING_ERRORS = (ValueError, TypeError, RuntimeError, FileNotFoundError)
"""Errors of building and training a spec (bad options, no CUDA device, missing data) that
`train` prints as one line; any other exception is a bug and keeps its traceback."""


@app.command()
def train(
    spec_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML or JSON.")],
    seed: Annotated[int, typer.Option(help="Seed of the run.")] = 0,
    workdir: Annotated[
        Path | None, typer.Option(help="Checkpoint folder; an existing checkpoint is resumed.")
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", envvar="LOOPE_DEBUG", help="Show the traceback of an error (LOOPE_DEBUG=1)."
        ),
    ] = False,
) -> None:
    """Train one spec locally, without the service, with a progress bar over steps.

    Example: loope train examples/digits.yaml --seed 1 --workdir runs/digits-1
    """
    spec = _read_spec(spec_file)
    try:
        result = _fit(spec, seed, workdir)
    except TRAINING_ERRORS as error:
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        console.print(
            f"[red]error:[/red] {message} (--debug shows the traceback)",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise typer.Exit(code=1) from None
    console.print(f"split: {result.split}", highlight=False)
    if result.outcome == "diverged":
        console.print(f"[red]diverged[/red] at step {result.diverged_at_step}")
        raise typer.Exit(code=2)
    console.print(f"{result.outcome} after {result.epochs_done} epochs ({result.step} steps)")
    typer.echo(json.dumps(result.test, indent=2))


def _read_spec(spec_file: Path) -> ExperimentSpec:
    """The spec of `spec_file`, or exit 1 with one line saying what is wrong with the file."""
    from loope.spec import ExperimentSpec, load_spec_file

    try:
        body = load_spec_file(spec_file)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    if "base" in body or "axes" in body:
        console.print(
            f"[red]error:[/red] {spec_file} is a sweep file (it has base/axes); use `loope sweep`",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
        raise typer.Exit(code=1)
    try:
        return ExperimentSpec.model_validate(body)
    except ValidationError as error:
        for problem in error.errors():
            console.print(
                f"[red]error:[/red] {spec_file}: {_problem_line(problem)}",
                highlight=False, soft_wrap=True,
            )  # fmt: skip
        raise typer.Exit(code=1) from None


def _problem_line(problem: Any) -> str:
    """One pydantic problem as `field.path: message`, the field named once."""
    field = ".".join(str(part) for part in problem["loc"])
    message = " ".join(str(problem["msg"]).removeprefix("Value error, ").split())
    return message if not field or message.startswith(f"{field}") else f"{field}: {message}"


def _fit(spec: ExperimentSpec, seed: int, workdir: Path | None) -> TrainResult:
    """Build the trainer and train to the end under a progress bar over steps."""
    from loope.train import Trainer

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task(f"{spec.pe.name} seed {seed}", total=None, status="")

        def show(step: int, metrics: dict[str, float]) -> None:
            if "epoch" in metrics:
                status = f"epoch {metrics['epoch']:.0f} val acc {metrics.get('val/acc', 0):.1f}"
                progress.update(task, completed=step, status=status)

        trainer = Trainer(
            spec, seed, workdir, show, on_step=lambda s: progress.update(task, completed=s)
        )
        progress.update(task, total=trainer.total_steps)
        resumed = trainer.resume()
        if resumed is not None:
            progress.update(task, completed=trainer.step, status=f"resumed after epoch {resumed}")
        return trainer.fit()


@app.command("three-cell")
def three_cell(
    n: Annotated[int | None, typer.Option(help="Number of images.")] = None,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    preset: Annotated[str, typer.Option(help="quick or paper.")] = "quick",
    grid: Annotated[int | None, typer.Option(help="Cells per side.")] = None,
    cell: Annotated[int | None, typer.Option(help="Pixels per cell side.")] = None,
    max_sq_len: Annotated[
        int | None, typer.Option(help="Largest squared offset length (default 2(g-1)^2).")
    ] = None,
    vector_sum_rule: Annotated[str, typer.Option(help="Bit 5: both (spec) or either.")] = "both",
    allow_collinear: Annotated[
        bool, typer.Option("--allow-collinear", help="Keep collinear triples.")
    ] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Print label statistics.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    save: Annotated[Path | None, typer.Option(help="Write PNGs and labels.csv here.")] = None,
) -> None:
    """Generate a Three-Cell dataset; print its label statistics (the default) or save it.

    Statistics are positive rates (per bit and per group) and majority rates (the score of
    always predicting each bit's majority: what a model without a PE can reach).

    Example: loope three-cell --n 1000 --seed 3 --stats --json
    """
    from loope.data import three_cell as tc

    if preset not in tc.PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; allowed: {', '.join(tc.PRESETS)}")
    given = {"n": n, "grid": grid, "cell": cell, "max_sq_len": max_sq_len}
    overrides = {k: v for k, v in given.items() if v is not None}
    try:
        config = dataclasses.replace(
            tc.PRESETS[preset], seed=seed, vector_sum_rule=vector_sum_rule,
            reject_collinear=not allow_collinear, **overrides,
        )  # fmt: skip
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if save is not None and save.exists() and not save.is_dir():
        raise typer.BadParameter(f"{save} is a file; name a folder", param_hint="--save")
    samples = tc.generate(config)
    if save is not None:
        try:
            tc.save_png(samples, save)
        except OSError as error:
            raise typer.BadParameter(f"cannot write {save}: {error}", param_hint="--save") from None
        console.print(f"wrote {len(samples)} images and labels.csv to {save}")
    if stats or as_json or save is None:  # with nothing asked, the statistics
        _print_stats(tc.label_stats(samples.labels), config, as_json)


def _print_stats(
    label_stats: dict[str, dict[str, float]], config: ThreeCellConfig, as_json: bool
) -> None:
    if as_json:
        typer.echo(json.dumps({"config": dataclasses.asdict(config)} | label_stats, indent=2))
        return
    for name, rates in label_stats.items():
        cells = ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
        console.print(f"{name}: {cells}", highlight=False)
