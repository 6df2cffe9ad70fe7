"""The PE view's data routes against a real server: similarity maps and PESI of catalogue PEs
and of trained runs (trained here by the real trainer), refusals, and the list of sweeps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from loope.pe import build_pe, patch_embedding_grid
from loope.pe.probe import PROBE_COUNT, pesi_of_grids, probe_grids, probe_images, trained_model
from loope.pesi import cosine_similarity_maps, pesi
from loope.spec import ExperimentSpec
from service.settings import Settings
from tests.conftest import ThreadServer
from workers.runner import run_attempt


def test_pe_map_is_the_centre_cells_cosine_similarity(api: httpx.Client) -> None:
    reply = api.get("/pe-map", params={"pe": "sinusoid-2d", "grid": "6x9", "cell": "2,5"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    similarity = np.array(body["map"])
    assert similarity.shape == (6, 9)
    assert similarity[2, 5] == 1.0 and similarity.max() == 1.0
    grid = patch_embedding_grid(build_pe("sinusoid-2d", 192, (6, 9), 16), (6, 9)).double().numpy()
    centre = grid[2, 5] / np.linalg.norm(grid[2, 5])
    expected = grid @ centre / np.linalg.norm(grid, axis=-1)
    np.testing.assert_allclose(similarity, expected, atol=1e-6)
    assert body["pesi"] == pesi(grid).to_dict()
    assert body["note"] is None


def test_learned_pe_is_labelled_as_initialised(api: httpx.Client) -> None:
    body = api.get("/pe-map", params={"pe": "learnable", "grid": "4x4", "seed": 3}).json()
    assert "initialised with seed 3" in body["note"]


def test_pesi_table_lists_the_additive_pes(api: httpx.Client) -> None:
    rows = api.get("/pesi", params={"grid": "8x8"}).json()["rows"]
    names = [row["pe"] for row in rows]
    assert "sinusoid-2d" in names and "rope-axial" not in names and "none" not in names
    for row in rows:
        assert set(row) == {"pe", "trainable", "M_U", "M_D", "A_SU"}


def test_pe_map_refusals_name_the_value_and_rule(api: httpx.Client) -> None:
    cases = {
        ("warp", "4x4", "0,0"): "unknown name 'warp'",
        ("rope-axial", "4x4", "0,0"): "no embedding per patch",
        ("sinusoid-2d", "40x40", "0,0"): "at most 32",
        ("sinusoid-2d", "4x4", "4,0"): "outside the 4x4 grid",
        ("sinusoid-2d", "4by4", "0,0"): "ROWSxCOLS",
    }
    for (pe, grid, cell), message in cases.items():
        reply = api.get("/pe-map", params={"pe": pe, "grid": grid, "cell": cell})
        assert reply.status_code == 422 and message in reply.json()["detail"], reply.text


def test_pe_routes_need_a_token_when_auth_is_on(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", auth="on")
    with ThreadServer(settings, dispatch=False) as server:
        _, token = server.server.config.app.state.accounts.add_user("ada")
        params = {"pe": "sinusoid-2d", "grid": "4x4"}
        with httpx.Client(base_url=f"{server.url}/api/v1") as anonymous:
            assert anonymous.get("/pe-map", params=params).status_code == 401
            assert anonymous.get("/pesi").status_code == 401
            signed = {"Authorization": f"Bearer {token}"}
            assert anonymous.get("/pe-map", params=params, headers=signed).status_code == 200


# --- the PE view of trained runs ----------------------------------------------------------

TINY_THREE_CELL = {"name": "three-cell", "preset": "quick", "n": 300}


def tiny_spec(pe: str) -> dict[str, Any]:
    """A tiny ViT on 300 quick Three-Cell images for one epoch: trains in about a second."""
    recipe = {"epochs": 1, "batch_size": 64, "device": "cpu"}
    return {"pe": {"name": pe}, "dataset": TINY_THREE_CELL, "train": recipe}


def train_for_real(server: ThreadServer, run_id: int) -> str:
    """Claim the run and train it in this process through the worker's own entry point, as
    the dispatcher's Ray task would: the real trainer, metrics, checkpoint artifact, end."""
    state = server.server.config.app.state
    claimed = state.queue.claim(run_id, lease_s=600)
    assert claimed is not None, f"run {run_id} could not be claimed"
    _, spec = state.store.get_run(run_id)
    workdir = state.artifact_root / "runs" / str(run_id)
    threads = torch.get_num_threads()
    try:
        return run_attempt(
            server.url, run_id, claimed[0].attempt, spec.body, 0, str(workdir), 5.0,
            state.worker_token,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)


@dataclass
class TrainedRuns:
    server: ThreadServer
    api: httpx.Client
    runs: dict[str, int]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedRuns]:
    """A server holding a finished LOOPE run and a finished learnable run (both trained for
    real), a queued run, a finished run without checkpoint and one with a foreign one."""
    folder = tmp_path_factory.mktemp("trained")
    settings = Settings(data_dir=folder / "data")
    with (
        ThreadServer(settings, dispatch=False) as server,
        httpx.Client(base_url=f"{server.url}/api/v1", timeout=60) as api,
    ):
        runs = {}
        for pe in ("loope", "learnable", "rope-axial"):
            [runs[pe]] = api.post("/specs", json={"spec": tiny_spec(pe)}).json()["created"]
            assert train_for_real(server, runs[pe]) == "succeeded"
        spec = {"spec": tiny_spec("sinusoid-1d"), "seeds": [1, 2, 3]}
        runs["queued"], runs["bare"], runs["foreign"] = api.post("/specs", json=spec).json()[
            "created"
        ]
        queue = server.server.config.app.state.queue
        for name in ("bare", "foreign"):
            attempt = queue.claim(runs[name], lease_s=600)[0].attempt
            api.post(f"/runs/{runs[name]}/started", json={"attempt": attempt, "node": "n"})
            if name == "foreign":
                outside = {"attempt": attempt, "kind": "checkpoint", "uri": "file:///etc/passwd"}
                assert api.post(f"/runs/{runs[name]}/artifacts", json=outside).status_code == 201
            done = {"attempt": attempt, "outcome": "succeeded"}
            assert api.post(f"/runs/{runs[name]}/finished", json=done).status_code == 200
        yield TrainedRuns(server, api, runs)


def _checkpoint_model(trained: TrainedRuns, run_id: int) -> torch.nn.Module:
    state = trained.server.server.config.app.state
    _, spec = state.store.get_run(run_id)
    path = state.artifact_root / "runs" / str(run_id) / "checkpoint.pt"
    return trained_model(ExperimentSpec.model_validate(spec.canonical), path).model


def test_trained_loope_is_mapped_on_probe_images_with_their_pesi(trained: TrainedRuns) -> None:
    run_id = trained.runs["loope"]
    reply = trained.api.get(f"/runs/{run_id}/pe-view", params={"cell": "2,5"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["image_conditioned"] and body["grid"] == [8, 8] and body["cell"] == [2, 5]
    assert body["checkpoint"]["epoch"] == 1 and body["checkpoint"]["uri"].endswith("checkpoint.pt")
    kinds = [panel["kind"] for panel in body["panels"]]
    assert kinds == ["image"] * PROBE_COUNT + ["mean", "zero-context"]

    # The same numbers from the checkpoint, computed here without the server.
    pe = _checkpoint_model(trained, run_id).pe
    images = probe_images(ExperimentSpec.model_validate(tiny_spec("loope")).dataset)
    grids, zero = probe_grids(pe, images)
    expected = pesi_of_grids(grids, zero)
    maps = [cosine_similarity_maps(grid)[2, 5] for grid in grids]
    for i, panel in enumerate(body["panels"][:PROBE_COUNT]):
        np.testing.assert_allclose(panel["map"], maps[i], atol=1e-6)
        assert panel["pesi"] == expected.per_image[i].to_dict()
        assert np.array(panel["colours"]).shape == (8, 8, 3)
    mean, zero_panel = body["panels"][-2:]
    np.testing.assert_allclose(mean["map"], np.mean(maps, axis=0), atol=1e-6)
    assert mean["pesi"] == expected.mean.to_dict()
    np.testing.assert_allclose(zero_panel["map"], cosine_similarity_maps(zero)[2, 5], atol=1e-6)
    assert zero_panel["pesi"] == expected.zero_context.to_dict()
    # The context network was trained: the images' PEs are not the image-free one.
    assert any(not np.allclose(m, zero_panel["map"], atol=1e-4) for m in maps)


def test_probe_images_carry_the_three_cells(trained: TrainedRuns) -> None:
    body = trained.api.get(f"/runs/{trained.runs['loope']}/pe-view").json()
    assert body["cell"] == [4, 4]  # the middle of the 8x8 grid by default
    for panel in body["panels"][:PROBE_COUNT]:
        colours = [tuple(c) for row in panel["colours"] for c in row]
        assert sorted(set(colours)) == [(0, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 0)]


def test_trained_learnable_pe_is_its_table_not_the_initialisation(trained: TrainedRuns) -> None:
    run_id = trained.runs["learnable"]
    body = trained.api.get(f"/runs/{run_id}/pe-view", params={"cell": "0,7"}).json()
    [panel] = body["panels"]
    assert panel["kind"] == "trained" and not body["image_conditioned"] and body["probe"] is None
    table = patch_embedding_grid(_checkpoint_model(trained, run_id).pe, (8, 8)).double().numpy()
    np.testing.assert_allclose(panel["map"], cosine_similarity_maps(table)[0, 7], atol=1e-6)
    assert panel["pesi"] == pesi(table).to_dict()
    torch.manual_seed(0)
    initial = patch_embedding_grid(build_pe("learnable", 64, (8, 8), 4), (8, 8)).double().numpy()
    assert not np.allclose(table, initial)


def test_runs_without_a_readable_pe_are_refused_with_the_reason(trained: TrainedRuns) -> None:
    cases = {
        ("queued", None): (409, "is QUEUED"),
        ("bare", None): (409, "has no checkpoint artifact"),
        ("foreign", None): (409, "outside the artifact root"),
        ("rope-axial", None): (422, "no embedding per patch"),
        ("loope", "8,0"): (422, "outside the 8x8 grid"),
        ("loope", "two"): (422, "not of the form ROW,COL"),
    }
    for (name, cell), (status, message) in cases.items():
        params = {} if cell is None else {"cell": cell}
        reply = trained.api.get(f"/runs/{trained.runs[name]}/pe-view", params=params)
        assert reply.status_code == status and message in reply.json()["detail"], reply.text
    assert trained.api.get("/runs/999999/pe-view").status_code == 404


def test_run_pe_view_needs_a_token_when_auth_is_on(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", auth="on")
    with ThreadServer(settings, dispatch=False) as server:
        _, token = server.server.config.app.state.accounts.add_user("ada")
        with httpx.Client(base_url=f"{server.url}/api/v1") as anonymous:
            assert anonymous.get("/runs/1/pe-view").status_code == 401
            signed = {"Authorization": f"Bearer {token}"}
            assert anonymous.get("/runs/1/pe-view", headers=signed).status_code == 404


def test_sweeps_are_listed_with_run_counts_page_by_page(api: httpx.Client) -> None:
    base = tiny_spec("none")
    ids = []
    for name in ("a", "b", "c"):
        sweep = {"base": base | {"name": name}, "axes": {"pe.name": ["none", "learnable"]}}
        ids.append(api.post("/sweeps", json=sweep | {"seeds": [0, 1]}).json()["sweep_id"])
    first = api.get("/sweeps", params={"limit": 2}).json()
    assert [s["id"] for s in first["sweeps"]] == ids[:2] and first["next_cursor"] == ids[1]
    rest = api.get("/sweeps", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [s["id"] for s in rest["sweeps"]] == ids[2:] and rest["next_cursor"] is None
    sweep = first["sweeps"][0]
    assert sweep["runs"] == {"QUEUED": 4} and sweep["seeds"] == [0, 1]
    assert sweep["axes"] == {"pe.name": ["none", "learnable"]}
    assert api.get("/sweeps", params={"limit": 0}).status_code == 422
