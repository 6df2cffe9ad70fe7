"""Submitting specs and sweeps to a real server: validation, expansion, resubmission."""

from __future__ import annotations

import httpx
from sqlalchemy import update

from service.db import Run, RunStatus
from tests.conftest import ThreadServer

SPEC = {"pe": {"name": "sinusoid-1d"}, "dataset": {"name": "three-cell", "preset": "quick"}}


def test_unknown_pe_is_refused_naming_field_and_allowed_values(api: httpx.Client) -> None:
    response = api.post("/specs", json={"spec": {**SPEC, "pe": {"name": "rainbow"}}})
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["field"] == "spec.pe.name"
    assert "'rainbow'" in problem["message"]
    assert "sinusoid-1d" in problem["message"] and "loope" in problem["message"]
    assert api.get("/runs").json()["runs"] == []


def test_unknown_dataset_and_architecture_are_refused(api: httpx.Client) -> None:
    bad = {**SPEC, "dataset": {"name": "imagenet-22k"}, "model": {"arch": "resnet"}}
    response = api.post("/specs", json={"spec": bad})
    assert response.status_code == 422
    fields = {p["field"]: p["message"] for p in response.json()["detail"]}
    assert "three-cell" in fields["spec.dataset.name"]
    assert "vit" in fields["spec.model.arch"]


def test_unknown_field_is_refused(api: httpx.Client) -> None:
    response = api.post("/specs", json={"spec": {**SPEC, "lerning_rate": 0.1}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "spec.lerning_rate"


def test_spec_with_seeds_creates_one_run_per_seed(api: httpx.Client) -> None:
    done = api.post("/specs", json={"spec": SPEC, "seeds": [0, 1, 2]}).json()
    assert len(done["created"]) == 3
    runs = api.get("/runs").json()["runs"]
    assert [r["seed"] for r in runs] == [0, 1, 2]
    assert {r["status"] for r in runs} == {"QUEUED"}
    assert len({r["spec_hash"] for r in runs}) == 1


def test_sweep_expands_axes_times_seeds(api: httpx.Client) -> None:
    body = {"base": SPEC, "axes": {"pe.name": ["none", "loope"]}, "seeds": [0, 1]}
    done = api.post("/sweeps", json=body).json()
    assert len(done["created"]) == 4 and done["sweep_id"] is not None
    runs = api.get("/runs", params={"sweep_id": done["sweep_id"]}).json()["runs"]
    assert sorted((r["pe"], r["seed"]) for r in runs) == [
        ("loope", 0), ("loope", 1), ("none", 0), ("none", 1),
    ]  # fmt: skip


def test_invalid_sweep_cell_writes_nothing(api: httpx.Client) -> None:
    body = {"base": SPEC, "axes": {"pe.name": ["none", "nope"]}, "seeds": [0]}
    response = api.post("/sweeps", json=body)
    assert response.status_code == 422
    assert "pe.name='nope'" in response.json()["detail"][0]["field"]
    assert api.get("/runs").json()["runs"] == []


def test_resubmission_policies(api: httpx.Client) -> None:
    body = {"base": SPEC, "axes": {"pe.name": ["none", "loope"]}, "seeds": [0]}
    first = api.post("/sweeps", json=body).json()
    again = api.post("/sweeps", json={**body, "seeds": [0, 1]}).json()
    assert sorted(again["reused"]) == sorted(first["created"])
    assert len(again["created"]) == 2
    skipped = api.post("/sweeps", json={**body, "policy": "skip"}).json()
    assert skipped["created"] == [] and len(skipped["skipped"]) == 2
    forced = api.post("/sweeps", json={**body, "policy": "force-new"}).json()
    assert len(forced["created"]) == 2
    assert len(api.get("/runs").json()["runs"]) == 6


def test_sweep_over_the_limit_is_413(api: httpx.Client) -> None:
    body = {"base": SPEC, "axes": {"train.lr": [1e-3] * 101}, "seeds": list(range(100))}
    response = api.post("/sweeps", json=body)
    assert response.status_code == 413
    assert "10000" in response.json()["detail"]


def test_cursor_pagination_visits_every_run_once(api: httpx.Client) -> None:
    api.post("/specs", json={"spec": SPEC, "seeds": list(range(7))})
    seen, cursor = [], 0
    while cursor is not None:
        page = api.get("/runs", params={"limit": 3, "cursor": cursor}).json()
        seen += [r["id"] for r in page["runs"]]
        cursor = page["next_cursor"]
    assert seen == sorted(set(seen)) and len(seen) == 7


def test_cancel_a_queued_run(api: httpx.Client) -> None:
    [run_id] = api.post("/specs", json={"spec": SPEC}).json()["created"]
    cancelled = api.post(f"/runs/{run_id}/cancel").json()
    assert cancelled["status"] == "CANCELLED"
    assert api.post(f"/runs/{run_id}/cancel").status_code == 409
    assert api.post("/runs/999/cancel").status_code == 404


def test_a_resubmitted_sweep_lists_compares_and_counts_all_its_cells(
    server: ThreadServer, api: httpx.Client
) -> None:
    """Reused cells belong to the new sweep too; a run of the same spec outside it does not."""
    body = {"base": SPEC, "axes": {"pe.name": ["none", "loope"]}, "seeds": [0, 1]}
    first = api.post("/sweeps", json=body).json()
    again = api.post("/sweeps", json=body).json()
    assert (again["created"], sorted(again["reused"])) == ([], sorted(first["created"]))
    wider = api.post("/sweeps", json={**body, "axes": {"pe.name": ["none", "loope", "rpe"]}})
    wider = wider.json()
    assert len(wider["created"]) == 2 and len(wider["reused"]) == 4
    alone = api.post("/specs", json={"spec": SPEC | {"pe": {"name": "none"}}, "seeds": [7]})
    [loose] = alone.json()["created"]
    for run_id in [*first["created"], *wider["created"], loose]:
        points = [{"key": "test/acc", "step": 1, "value": float(run_id)}]
        response = api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points})
        assert response.status_code == 200, response.text
    with server.app.state.store.sessions.begin() as session:  # as the workers' reports would
        session.execute(update(Run).values(status=RunStatus.SUCCEEDED, attempt=1))

    def members(sweep_id: int) -> list[int]:
        runs = api.get("/runs", params={"sweep_id": sweep_id}).json()["runs"]
        return [run["id"] for run in runs]

    assert members(again["sweep_id"]) == sorted(first["created"])
    assert members(wider["sweep_id"]) == sorted(first["created"] + wider["created"])
    params = {"group_by": ["pe.name"], "sweep_id": again["sweep_id"]}
    groups = {g["key"]["pe.name"]: g for g in api.get("/compare", params=params).json()["groups"]}
    assert sorted(groups) == ["loope", "none"]
    assert sorted(run for g in groups.values() for run in g["runs"]) == sorted(first["created"])
    assert groups["none"]["metrics"]["acc"]["n"] == 2, "the run of seed 7 is not in the sweep"
    params["sweep_id"] = wider["sweep_id"]
    groups = {g["key"]["pe.name"]: g for g in api.get("/compare", params=params).json()["groups"]}
    assert {pe: g["metrics"]["acc"]["n"] for pe, g in groups.items()} == dict.fromkeys(
        ("loope", "none", "rpe"), 2
    )
    sweeps = {s["id"]: s["runs"] for s in api.get("/sweeps").json()["sweeps"]}
    assert sweeps == {
        first["sweep_id"]: {"SUCCEEDED": 4},
        again["sweep_id"]: {"SUCCEEDED": 4},
        wider["sweep_id"]: {"SUCCEEDED": 6},
    }


def test_a_spec_submitted_with_a_sweep_id_fills_that_sweep(api: httpx.Client) -> None:
    """The runs of a fill, new or reused, become the sweep's cells; a second fill of the same
    seeds adds nothing; a spec outside the sweep, or a sweep that does not exist, is refused."""
    body = {"base": SPEC, "axes": {"pe.name": ["none", "loope"]}, "seeds": [0]}
    sweep_id = api.post("/sweeps", json=body).json()["sweep_id"]
    loope = SPEC | {"pe": {"name": "loope"}}
    [standalone] = api.post("/specs", json={"spec": loope, "seeds": [4]}).json()["created"]

    fill = {"spec": loope, "seeds": [3, 4], "sweep_id": sweep_id}
    done = api.post("/specs", json=fill).json()
    assert done["reused"] == [standalone] and len(done["created"]) == 1
    assert done["sweep_id"] == sweep_id
    runs = api.get("/runs", params={"sweep_id": sweep_id}).json()["runs"]
    assert sorted((r["pe"], r["seed"]) for r in runs) == [
        ("loope", 0), ("loope", 3), ("loope", 4), ("none", 0)
    ]  # fmt: skip
    again = api.post("/specs", json=fill)
    assert again.status_code == 201 and again.json()["created"] == []
    assert len(api.get("/runs", params={"sweep_id": sweep_id}).json()["runs"]) == 4

    rpe = api.post("/specs", json=fill | {"spec": SPEC | {"pe": {"name": "rpe"}}})
    assert rpe.status_code == 422
    assert rpe.json()["detail"].startswith("sweep_id:")
    assert f"not one of sweep {sweep_id}'s 2 cells" in rpe.json()["detail"]
    nowhere = api.post("/specs", json=fill | {"sweep_id": sweep_id + 1000})
    assert nowhere.status_code == 404 and "no sweep" in nowhere.json()["detail"]
    assert len(api.get("/runs", params={"sweep_id": sweep_id}).json()["runs"]) == 4
