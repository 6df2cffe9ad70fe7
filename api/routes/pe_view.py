"""The PE view's data: cosine-similarity maps of a PE's patch embeddings, and PESI.

Each request builds the PE afresh from the catalogue (seeded), lays its patch embeddings
out on the grid and measures them; nothing is read from the database. The PE of a trained
run is the business of `run_pe_view`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Depends, HTTPException, Query

from api.deps import current_user
from api.schemas import MAX_DB_INT
from loope.orders import parse_grid
from loope.pe import PE_REGISTRY, build_pe, patch_embedding_grid
from loope.pesi import cosine_similarity_maps, pesi

log = logging.getLogger(__name__)

router = APIRouter(tags=["pe"], dependencies=[Depends(current_user)])

MAX_GRID_SIDE = 32
MAX_DIM = 1024
PATCH_SIZE = 16  # reaches only LOOPE's context network, which the image-free view never runs


@router.get("/pe-map")
def pe_map(
    pe: Annotated[str, Query(max_length=64)],
    grid: Annotated[str, Query(max_length=16)] = "14x14",
    cell: Annotated[str, Query(max_length=16, description="centre cell as ROW,COL")] = "0,0",
    order: Annotated[str | None, Query(max_length=32)] = None,
    dim: Annotated[int, Query(ge=4, le=MAX_DIM)] = 192,
    seed: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> dict[str, Any]:
    """The similarity of the centre cell's PE to every cell's, and the PE's PESI scores."""
    shape = _grid(grid)
    centre = parse_cell(cell, shape)
    embeddings = _embeddings(pe, order, shape, dim, seed)  # h, w, D
    maps = cosine_similarity_maps(embeddings)  # h, w, h, w
    info = PE_REGISTRY[pe].info
    return {
        "pe": pe,
        "order": order,
        "grid": list(shape),
        "cell": list(centre),
        "dim": dim,
        "seed": seed,
        "map": np.round(maps[centre], 6).tolist(),
        "pesi": scores_json(pesi(embeddings).to_dict()),
        "note": _note(pe, info.trainable, info.image_conditioned, seed),
    }


@router.get("/pesi")
def pesi_table(
    grid: Annotated[str, Query(max_length=16)] = "14x14",
    dim: Annotated[int, Query(ge=4, le=MAX_DIM)] = 192,
    seed: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> dict[str, Any]:
    """PESI of every PE of the catalogue that adds an embedding per patch, on one grid."""
    shape = _grid(grid)
    rows = []
    for name, entry in PE_REGISTRY.items():
        if entry.info.kind != "additive" or name == "none":
            continue
        scores = scores_json(pesi(_embeddings(name, None, shape, dim, seed)).to_dict())
        rows.append({"pe": name, "trainable": entry.info.trainable, **scores})
    return {"grid": list(shape), "dim": dim, "seed": seed, "rows": rows}


def _grid(text: str) -> tuple[int, int]:
    try:
        rows, cols = parse_grid(text)
    except ValueError as error:
        raise HTTPException(422, f"grid: {error}") from None
    if max(rows, cols) > MAX_GRID_SIDE:
        raise HTTPException(422, f"grid {text!r}: each side must be at most {MAX_GRID_SIDE}")
    return rows, cols


def parse_cell(text: str, grid: tuple[int, int]) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise HTTPException(422, f"cell {text!r} is not of the form ROW,COL")
    row, col = (int(part) for part in parts)
    if row >= grid[0] or col >= grid[1]:
        raise HTTPException(422, f"cell ({row}, {col}) is outside the {grid[0]}x{grid[1]} grid")
    return row, col


def _embeddings(
    name: str, order: str | None, grid: tuple[int, int], dim: int, seed: int
) -> np.ndarray:
    """The PE's patch embeddings as float64 (h, w, D); 422 when the PE has none per patch."""
    if name not in PE_REGISTRY:
        raise HTTPException(422, f"pe: unknown name {name!r}; allowed: {', '.join(PE_REGISTRY)}")
    options = {} if order is None else {"order": order}
    torch.manual_seed(seed)
    try:
        module = build_pe(name, dim, grid, PATCH_SIZE, **options)
        return patch_embedding_grid(module, grid).double().numpy()
    except (ValueError, TypeError) as error:
        raise HTTPException(422, f"pe {name!r}: {error}") from None


def scores_json(scores: dict[str, float]) -> dict[str, float | str]:
    """Scores with NaN spelled out, as everywhere in this API's JSON."""
    return {k: v if np.isfinite(v) else "nan" for k, v in scores.items()}


def _note(name: str, trainable: bool, image_conditioned: bool, seed: int) -> str | None:
    """What an untrained map shows; a trained run's PE is at /runs/{id}/pe-view."""
    if image_conditioned:
        return f"{name} shown without an image (X_C = 0), as initialised with seed {seed}"
    if trainable:
        return f"{name} has learned parameters; shown as initialised with seed {seed}"
    return None
