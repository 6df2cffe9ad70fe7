"""The PE view of a trained run: similarity maps and PESI of the PE its checkpoint holds.

The run's model is rebuilt from its spec on the CPU and loaded from the training
checkpoint its worker recorded as an artifact. An image-conditioned PE (LOOPE) is
evaluated on a fixed probe set drawn from the run's dataset spec: one panel per probe
image, their mean, and the image-free X_C = 0 panel. Any other additive PE gives one
panel, the trained table. The patch embeddings of a run are kept in a small cache, so
choosing another centre cell costs only the similarity map.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlparse

import numpy as np
import torch
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from api.deps import StoreDep, UserDep, current_user
from api.routes.pe_view import parse_cell, scores_json
from api.routes.runs import RunIdPath, readable_run
from loope.pe import PositionalEmbedding, patch_embedding_grid
from loope.pe.probe import (
    PROBE_COUNT,
    PROBE_SEED,
    pesi_of_grids,
    probe_grids,
    probe_images,
    trained_model,
)
from loope.pesi import cosine_similarity_maps, pesi
from loope.spec import ExperimentSpec
from service.db import Artifact, RunStatus

log = logging.getLogger(__name__)

router = APIRouter(tags=["pe"], dependencies=[Depends(current_user)])

PanelKind = Literal["image", "mean", "zero-context", "trained"]
LIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
CACHE_RUNS = 8


@dataclass(frozen=True)
class Panel:
    """One set of patch PEs shown as a map: a probe image's, the mean, X_C = 0, or trained.

    `grid` is (h, w, D) float64; the mean panel has none (its map is the mean of the
    images' maps). `colours` is the probe image's mean colour per patch (h, w, 3), 0..255.
    """

    label: str
    kind: PanelKind
    grid: np.ndarray | None
    scores: dict[str, float]
    colours: np.ndarray | None = None


@dataclass(frozen=True)
class TrainedPE:
    """The panels of one checkpoint, and what they were computed from."""

    pe: str
    grid: tuple[int, int]
    dim: int
    image_conditioned: bool
    panels: list[Panel]
    epoch: int | None


_cache: OrderedDict[tuple[int, str, int, int], TrainedPE] = OrderedDict()
_cache_lock = threading.Lock()


@router.get("/runs/{run_id}/pe-view")
def run_pe_view(
    run_id: RunIdPath,
    request: Request,
    store: StoreDep,
    user: UserDep,
    cell: Annotated[
        str | None, Query(max_length=16, description="centre cell as ROW,COL; default the middle")
    ] = None,
) -> dict[str, Any]:
    """Similarity maps of the run's trained PE at one centre cell, and their PESI table."""
    run, spec = readable_run(store, run_id, user)
    if run.status in LIVE:
        raise HTTPException(
            409, f"run {run_id} is {run.status.value}; its trained PE is shown once it has ended"
        )
    artifact = _latest_checkpoint(store.artifacts(run_id), run_id)
    path = _checkpoint_path(artifact, request.app.state.artifact_root, run_id)
    trained = _trained(run_id, artifact, path, ExperimentSpec.model_validate(spec.canonical))
    centre = (
        parse_cell(cell, trained.grid) if cell else (trained.grid[0] // 2, trained.grid[1] // 2)
    )
    return _view_json(run_id, run.status, artifact, trained, centre)


def _latest_checkpoint(artifacts: list[Artifact], run_id: int) -> Artifact:
    checkpoints = [a for a in artifacts if a.kind == "checkpoint"]
    if not checkpoints:
        raise HTTPException(409, f"run {run_id} has no checkpoint artifact to read its PE from")
    return max(checkpoints, key=lambda a: (a.attempt, a.id))


def _checkpoint_path(artifact: Artifact, root: Path, run_id: int) -> Path:
    """The checkpoint's local file; only files under the artifact root are read."""
    parsed = urlparse(artifact.uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise HTTPException(409, f"run {run_id}: checkpoint {artifact.uri!r} is not a local file")
    path = Path(unquote(parsed.path)).resolve()
    if not path.is_relative_to(root):
        raise HTTPException(
            409, f"run {run_id}: checkpoint {artifact.uri!r} lies outside the artifact root {root}"
        )
    if not path.is_file():
        raise HTTPException(409, f"run {run_id}: checkpoint file {path} no longer exists")
    return path


def _trained(run_id: int, artifact: Artifact, path: Path, spec: ExperimentSpec) -> TrainedPE:
    """The run's panels, from the cache while the checkpoint file is unchanged."""
    stat = path.stat()
    key = (run_id, str(path), stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    if artifact.sha256 is not None and _sha256(path) != artifact.sha256:
        raise HTTPException(
            409, f"run {run_id}: checkpoint {path} changed since attempt {artifact.attempt} "
            "recorded it (its SHA-256 differs)",
        )  # fmt: skip
    trained = _compute(spec, path, run_id)
    with _cache_lock:
        _cache[key] = trained
        while len(_cache) > CACHE_RUNS:
            _cache.popitem(last=False)
    return trained


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def _compute(spec: ExperimentSpec, path: Path, run_id: int) -> TrainedPE:
    """Rebuild the model, load the checkpoint and lay the PE's patch embeddings out."""
    try:
        rebuilt = trained_model(spec, path)
    except (ValueError, RuntimeError, pickle.UnpicklingError) as error:
        raise HTTPException(409, f"run {run_id}: checkpoint unusable: {error}") from None
    pe = rebuilt.model.pe
    if not isinstance(pe, PositionalEmbedding):
        raise HTTPException(
            422, f"run {run_id}: a {spec.model.arch} model has one PE per branch or stage; "
            "the PE view shows models with a single PE",
        )  # fmt: skip
    if pe.info.kind != "additive" or spec.pe.name == "none":
        raise HTTPException(
            422, f"run {run_id}: {spec.pe.name} is a {pe.info.kind!r} PE: it gives no embedding "
            "per patch, so it has no similarity map",
        )  # fmt: skip
    with torch.no_grad():
        panels = _probe_panels(pe, spec) if pe.info.image_conditioned else _table_panel(pe)
    log.info("PE view of run %d: %d panels of %s", run_id, len(panels), spec.pe.name)
    info = pe.info
    return TrainedPE(spec.pe.name, pe.grid, pe.dim, info.image_conditioned, panels, rebuilt.epoch)


def _table_panel(pe: PositionalEmbedding) -> list[Panel]:
    grid = patch_embedding_grid(pe, pe.grid).double().numpy()  # h, w, D
    return [Panel("trained", "trained", grid, pesi(grid).to_dict())]


def _probe_panels(pe: PositionalEmbedding, spec: ExperimentSpec) -> list[Panel]:
    """A panel per probe image, the mean over them, and the image-free panel."""
    images = probe_images(spec.dataset)  # B, C, H, W
    grids, zero = probe_grids(pe, images)  # B, h, w, D and h, w, D
    scores = pesi_of_grids(grids, zero)
    colours = _patch_colours(images, pe.grid)  # B, h, w, 3
    panels = [
        Panel(f"image {i + 1}", "image", grid, s.to_dict(), colours[i])
        for i, (grid, s) in enumerate(zip(grids, scores.per_image, strict=True))
    ]
    panels.append(Panel(f"mean of {len(images)} images", "mean", None, scores.mean.to_dict()))
    panels.append(Panel("X_C = 0", "zero-context", zero, scores.zero_context.to_dict()))
    return panels


def _patch_colours(images: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """Each image's mean colour per patch, (B, h, w, 3) in 0..255, grey for one channel."""
    h, w = grid
    pooled = torch.nn.functional.adaptive_avg_pool2d(images, (h, w))  # B, C, h, w
    rgb = pooled.expand(-1, 3, -1, -1) if pooled.shape[1] == 1 else pooled[:, :3]
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _view_json(
    run_id: int, status: RunStatus, artifact: Artifact, trained: TrainedPE, centre: tuple[int, int]
) -> dict[str, Any]:
    maps = {
        p.label: cosine_similarity_maps(p.grid)[centre] for p in trained.panels if p.kind != "mean"
    }
    image_maps = [maps[p.label] for p in trained.panels if p.kind == "image"]
    panels = []
    for panel in trained.panels:
        similarity = np.mean(image_maps, axis=0) if panel.kind == "mean" else maps[panel.label]
        item = {"label": panel.label, "kind": panel.kind, "map": np.round(similarity, 6).tolist()}
        item["pesi"] = scores_json(panel.scores)
        if panel.colours is not None:
            item["colours"] = panel.colours.tolist()
        panels.append(item)
    probe = {"count": PROBE_COUNT, "seed": PROBE_SEED} if trained.image_conditioned else None
    return {
        "run_id": run_id,
        "status": status.value,
        "pe": trained.pe,
        "grid": list(trained.grid),
        "cell": list(centre),
        "dim": trained.dim,
        "image_conditioned": trained.image_conditioned,
        "checkpoint": {"uri": artifact.uri, "attempt": artifact.attempt, "epoch": trained.epoch},
        "probe": probe,
        "panels": panels,
    }
