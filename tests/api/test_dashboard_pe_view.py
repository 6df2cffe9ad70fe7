"""The PE view's data routes against a real server: similarity maps and PESI, and refusals."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from loope.pe import build_pe, patch_embedding_grid
from loope.pesi import pesi
from service.settings import Settings
from tests.conftest import ThreadServer


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
