"""Commands that inspect patch orders and PEs: `order`, `pesi`, `pe-map`.

`pesi` and `pe-map` look at a PE's patch embeddings laid out on the grid, so they apply to
additive PEs only; attention-bias, rotary and conditional PEs have no embedding per patch
and are refused with that reason. A learnable PE is shown freshly initialised (seeded by
`--seed`), and LOOPE with X_C = 0 (the Gilbert sinusoid); the values of a trained model,
per image for LOOPE, will come from its checkpoint.

Torch and matplotlib are imported inside the commands, so `loope --help` stays fast.
Letters: h and w grid rows and columns, D PE width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from loope.cli.app import app
from loope.orders import ORDER_NAMES, parse_grid, patch_ranks

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from loope.pe import PositionalEmbedding

PATCH_SIZE = 16  # reaches only LOOPE's context network, which X_C = 0 never runs

GridOption = Annotated[str, typer.Option("--grid", help="Patch grid as ROWSxCOLS, e.g. 14x14.")]
PEOption = Annotated[str, typer.Option("--pe", help="Registry name of the PE.")]
OrderOption = Annotated[
    str | None, typer.Option("--order", help="Patch order, for PEs that take one.")
]
DimOption = Annotated[int, typer.Option("--dim", min=2, help="PE width D.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of a learnable PE's init.")]


@app.command("order")
def order(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(ORDER_NAMES)}.")],
    grid: GridOption = "14x14",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the rank of every patch along an order, laid out on the grid.

    Examples:

      loope order gilbert --grid 14x14

      loope order hilbert --grid 8x8 --json
    """
    rows, cols = _grid(grid)
    if name not in ORDER_NAMES:
        raise typer.BadParameter(f"unknown order {name!r}; choose one of {', '.join(ORDER_NAMES)}")
    try:
        ranks = patch_ranks(name, rows, cols).reshape(rows, cols)  # N -> h, w
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="NAME") from None
    if as_json:
        typer.echo(json.dumps({"order": name, "grid": [rows, cols], "rank": ranks.tolist()}))
        return
    width = len(str(rows * cols - 1))
    for line in ranks:
        typer.echo(" ".join(f"{rank:>{width}d}" for rank in line))


@app.command("pesi")
def pesi_command(
    pe: PEOption,
    order: OrderOption = None,
    grid: GridOption = "14x14",
    dim: DimOption = 768,
    buckets: Annotated[int, typer.Option("--buckets", min=1, help="Angular sectors.")] = 60,
    seed: SeedOption = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print PESI (M_U, M_D, A_SU) of a PE's patch embeddings on a grid.

    For LOOPE this is the X_C = 0 value; the per-image values of a trained run are on its
    PE view in the dashboard.

    Examples:

      loope pesi --pe sinusoid-1d --grid 14x14 --dim 768 --buckets 60

      loope pesi --pe hilbert-pe --json
    """
    from loope.pesi import pesi

    shape = _grid(grid)
    embeddings = _pe_grid(pe, order, shape, dim, seed)
    scores = {key: round(value, 4) for key, value in pesi(embeddings, buckets).to_dict().items()}
    if as_json:
        typer.echo(json.dumps(scores))
        return
    for key, value in scores.items():
        typer.echo(f"{key:<5} {value: .4f}")


@app.command("pe-map")
def pe_map(
    pe: PEOption,
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="PNG file to write.")],
    order: OrderOption = None,
    grid: GridOption = "14x14",
    dim: DimOption = 768,
    cell: Annotated[
        str | None, typer.Option("--cell", help="Centre cell as ROW,COL (0-based).")
    ] = None,
    cells: Annotated[
        str | None, typer.Option("--cells", help="'all' for every centre cell's map.")
    ] = None,
    seed: SeedOption = 0,
) -> None:
    """Write the cosine-similarity map of one cell's PE to every cell's, or of all cells.

    Examples:

      loope pe-map --pe sinusoid-2d --cell 3,4 --grid 8x8 --out map.png

      loope pe-map --pe loope --cells all --out loope-maps.png
    """
    from loope.pesi import cosine_similarity_maps

    if out.suffix.lower() != ".png":
        raise typer.BadParameter(f"{str(out)!r}: name a .png file", param_hint="--out")
    shape = _grid(grid)
    if (cell is None) == (cells is None):
        raise typer.BadParameter("give exactly one of --cell ROW,COL and --cells all")
    if cells is not None and cells != "all":
        raise typer.BadParameter(f"--cells takes only 'all', got {cells!r}", param_hint="--cells")
    centre = _cell(cell, shape) if cell is not None else None

    maps = cosine_similarity_maps(_pe_grid(pe, order, shape, dim, seed))  # h, w, h, w
    label = pe if order is None else f"{pe} ({order})"
    if centre is None:
        _save_all_maps(maps, label, out)
    else:
        _save_one_map(maps[centre], centre, label, out)
    typer.echo(f"wrote {out}")


def _grid(text: str) -> tuple[int, int]:
    try:
        return parse_grid(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--grid") from None


def _cell(text: str, grid: tuple[int, int]) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise typer.BadParameter(f"cell {text!r} is not of the form ROW,COL", param_hint="--cell")
    row, col = (int(part) for part in parts)
    if row >= grid[0] or col >= grid[1]:
        raise typer.BadParameter(
            f"cell ({row}, {col}) is outside the {grid[0]}x{grid[1]} grid", param_hint="--cell"
        )
    return row, col


def _pe_grid(
    name: str, order: str | None, grid: tuple[int, int], dim: int, seed: int
) -> np.ndarray:
    """The PE's patch embeddings as a float64 array (h, w, D), with notes on what they are."""
    import torch

    from loope.pe import patch_embedding_grid

    torch.manual_seed(seed)
    pe = _build(name, order, grid, dim)
    try:
        embeddings = patch_embedding_grid(pe, grid)  # h, w, D
    except ValueError as error:
        raise typer.BadParameter(f"PE {name!r}: {error}", param_hint="--pe") from None
    _note(name, pe, seed)
    return embeddings.double().numpy()


def _build(name: str, order: str | None, grid: tuple[int, int], dim: int) -> PositionalEmbedding:
    from loope.pe import PE_REGISTRY, build_pe

    if name not in PE_REGISTRY:
        raise typer.BadParameter(
            f"unknown PE {name!r}; choose one of {', '.join(PE_REGISTRY)}", param_hint="--pe"
        )
    if order is not None and not PE_REGISTRY[name].uses_order:
        raise typer.BadParameter(f"PE {name!r} takes no order", param_hint="--order")
    if order is not None and order not in ORDER_NAMES:
        raise typer.BadParameter(
            f"unknown order {order!r}; choose one of {', '.join(ORDER_NAMES)}", param_hint="--order"
        )
    options = {} if order is None else {"order": order}
    try:
        return build_pe(name, dim, grid, PATCH_SIZE, **options)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _note(name: str, pe: PositionalEmbedding, seed: int) -> None:
    """Say on stderr when the embeddings are not those of a trained model."""
    if pe.info.image_conditioned:
        typer.echo(
            f"note: {name} shown with X_C = 0 (no image); per-image values of a trained model "
            "will come from its checkpoint",
            err=True,
        )
    elif pe.info.trainable:
        typer.echo(
            f"note: {name} has learned parameters; shown freshly initialised (seed {seed})",
            err=True,
        )


def _save_one_map(similarity: np.ndarray, centre: tuple[int, int], label: str, out: Path) -> None:
    """One (h, w) map with the centre cell marked."""
    from matplotlib.figure import Figure

    h, w = similarity.shape
    figure = Figure(figsize=(1.5 + 0.35 * w, 0.8 + 0.35 * h))
    axes = figure.add_subplot()
    image = axes.imshow(similarity, cmap="viridis", vmin=similarity.min(), vmax=1)
    axes.plot(centre[1], centre[0], marker="x", color="red")
    axes.set_title(f"{label}: cosine similarity to cell {centre}", fontsize=9)
    figure.colorbar(image, ax=axes)
    _save(figure, out)


def _save_all_maps(maps: np.ndarray, label: str, out: Path) -> None:
    """Every centre's (h, w) map, tiled at the centre's place in an h × w mosaic."""
    import numpy as np
    from matplotlib.figure import Figure

    h, w = maps.shape[:2]
    padded = np.pad(maps, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=np.nan)
    mosaic = padded.transpose(0, 2, 1, 3).reshape(h * (h + 1), w * (w + 1))  # h·(h+1), w·(w+1)
    figure = Figure(figsize=(2 + 0.5 * w, 1 + 0.5 * h))
    axes = figure.add_subplot()
    image = axes.imshow(mosaic, cmap="viridis", vmin=maps.min(), vmax=1, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(f"{label}: cosine similarity, one map per centre cell", fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.6)
    _save(figure, out)


def _save(figure: Figure, out: Path) -> None:
    try:
        figure.savefig(out, dpi=100, bbox_inches="tight")
    except OSError as error:
        raise typer.BadParameter(f"cannot write {out}: {error}", param_hint="--out") from None
