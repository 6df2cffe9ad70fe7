"""Security with auth on, against a real server on both databases: every route but health
and the docs needs a valid token, tokens are kept hashed, users cannot act on others' runs,
read others' private runs or borrow others' idempotency keys, and no browser origin is
allowed by default."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from loope.cli.app import app as cli
from service.db import RunStatus, make_engine, make_sessionmaker
from service.queue import RunQueue

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}
OPEN_PATHS = {"/api/v1/health"}


def add_user(database_url: str, name: str, *flags: str) -> str:
    result = CliRunner().invoke(cli, ["user", "add", name, *flags, "--database-url", database_url])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def client(url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def _operations(url: str) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the published schema, ids and keys filled in."""
    schema = httpx.get(f"{url}/openapi.json").json()
    found = []
    for path, operations in schema["paths"].items():
        concrete = path.replace("{run_id}", "1").replace("{key}", "loss")
        found += [(method.upper(), concrete) for method in operations if path not in OPEN_PATHS]
    return found


@pytest.mark.timeout(180)
def test_every_route_but_health_and_docs_needs_a_valid_token(
    database_url: str, serve: Callable
) -> None:
    ada = add_user(database_url, "ada")
    server = serve(auth="on")
    operations = _operations(server.url)
    assert len(operations) >= 15
    for token in (None, "loope_forged", ada[:-1], "", ada + "x"):
        with client(server.url, token) as caller:
            for method, path in operations:
                answer = caller.request(method, path, json={})
                assert answer.status_code == 401, f"{method} {path} with {token!r}: {answer.text}"
                assert answer.headers["www-authenticate"] == "Bearer"
    with client(server.url) as anonymous:
        assert anonymous.get("/api/v1/health").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        assert anonymous.get("/docs").status_code == 200
    with client(server.url, ada) as as_ada:
        assert as_ada.get("/api/v1/runs").status_code == 200


@pytest.mark.timeout(120)
def test_tokens_are_kept_only_as_hashes(database_url: str, serve: Callable) -> None:
    tokens = [add_user(database_url, name) for name in ("ada", "bob")]
    server = serve(auth="on")
    tokens.append(server.app.state.worker_token)
    engine = make_engine(database_url)
    with engine.connect() as connection:
        rows = [
            tuple(map(str, row)) for row in connection.execute(text("SELECT * FROM api_tokens"))
        ]
        users = [tuple(map(str, row)) for row in connection.execute(text("SELECT * FROM users"))]
    engine.dispose()
    stored = " ".join(" ".join(row) for row in rows + users)
    for token in tokens:
        assert token not in stored and token.removeprefix("loope_") not in stored


@pytest.mark.timeout(180)
def test_users_cannot_act_on_runs_of_others_or_report_as_workers(
    database_url: str, serve: Callable
) -> None:
    ada, bob = add_user(database_url, "ada"), add_user(database_url, "bob")
    server = serve(auth="on")
    with (
        client(f"{server.url}/api/v1", ada) as as_ada,
        client(f"{server.url}/api/v1", bob) as as_bob,
    ):
        [run_id] = as_ada.post("/specs", json={"spec": SPEC}).json()["created"]
        point = {"attempt": 1, "points": [{"key": "loss", "step": 0, "value": 1.0}]}
        artifact = {"attempt": 1, "kind": "plot", "uri": "file:///tmp/x.png"}
        refused = {
            "cancel": as_bob.post(f"/runs/{run_id}/cancel"),
            "retry": as_bob.post(f"/runs/{run_id}/retry"),
            "metrics": as_bob.post(f"/runs/{run_id}/metrics", json=point),
            "artifacts": as_bob.post(f"/runs/{run_id}/artifacts", json=artifact),
            "add user": as_bob.post("/users", json={"name": "mallory", "admin": True}),
            "started": as_ada.post(f"/runs/{run_id}/started", json={"attempt": 1}),
            "heartbeat": as_ada.post(
                f"/runs/{run_id}/heartbeat", json={"attempt": 1, "interval_s": 1}
            ),
            "finished": as_ada.post(
                f"/runs/{run_id}/finished", json={"attempt": 1, "outcome": "succeeded"}
            ),
        }
        for action, answer in refused.items():
            assert answer.status_code == 403, f"{action}: {answer.status_code} {answer.text}"
        run = as_ada.get(f"/runs/{run_id}").json()
        assert run["status"] == "QUEUED" and run["summary"] == {}
        assert as_ada.get(f"/runs/{run_id}/artifacts").json() == []
        assert as_bob.get("/runs", params={"mine": True}).json()["runs"] == []


@pytest.mark.timeout(120)
def test_an_idempotency_key_replays_only_to_the_caller_who_made_it(
    database_url: str, serve: Callable
) -> None:
    ada, bob = add_user(database_url, "ada"), add_user(database_url, "bob")
    server = serve(auth="on")
    key = {"Idempotency-Key": "shared-key"}
    with (
        client(f"{server.url}/api/v1", ada) as as_ada,
        client(f"{server.url}/api/v1", bob) as as_bob,
    ):
        first = as_ada.post("/specs", json={"spec": SPEC, "policy": "force-new"}, headers=key)
        other = as_bob.post("/specs", json={"spec": SPEC, "policy": "force-new"}, headers=key)
        assert first.status_code == other.status_code == 201
        assert "idempotent-replayed" not in other.headers
        assert first.json()["created"] != other.json()["created"]
        [bobs] = other.json()["created"]
        assert as_bob.get(f"/runs/{bobs}").json()["owner"] == "bob"


@pytest.mark.timeout(60)
def test_cors_is_closed_by_default(api: httpx.Client) -> None:
    evil = {"Origin": "http://evil.example"}
    preflight = api.options("/specs", headers={**evil, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code >= 400
    read = api.get("/runs", headers=evil)
    assert "access-control-allow-origin" not in read.headers
    assert "access-control-allow-credentials" not in read.headers


PRIVATE_SPEC = {**SPEC, "pe": {"name": "learnable"}}


def _succeed(database_url: str, run_id: int, worker: httpx.Client, average: float) -> None:
    """Take a run through one attempt as the dispatcher and a worker would, with a metric,
    a test score and an artifact."""
    queue = RunQueue(make_sessionmaker(make_engine(database_url)))
    assert queue.claim(run_id, lease_s=60) is not None
    points = [
        {"key": "train/loss", "step": 1, "value": 0.5},
        {"key": "test/average", "step": 1, "value": average},
    ]
    assert worker.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points}).is_success
    artifact = {"attempt": 1, "kind": "plot", "uri": f"file:///tmp/run-{run_id}.png"}
    assert worker.post(f"/runs/{run_id}/artifacts", json=artifact).status_code == 201
    assert queue.finish(run_id, 1, RunStatus.SUCCEEDED)


def _reads(caller: httpx.Client, run_id: int) -> dict[str, httpx.Response]:
    return {
        "get": caller.get(f"/runs/{run_id}"),
        "metric keys": caller.get(f"/runs/{run_id}/metrics"),
        "series": caller.get(f"/runs/{run_id}/metrics/train/loss"),
        "artifacts": caller.get(f"/runs/{run_id}/artifacts"),
        "cancel": caller.post(f"/runs/{run_id}/cancel"),
        "retry": caller.post(f"/runs/{run_id}/retry"),
        "report": caller.post(
            f"/runs/{run_id}/metrics",
            json={"attempt": 1, "points": [{"key": "x", "step": 9, "value": 1.0}]},
        ),
    }


def _listed(caller: httpx.Client, **params: object) -> set[int]:
    return {run["id"] for run in caller.get("/runs", params=params).json()["runs"]}


def _compared_pes(caller: httpx.Client) -> dict[str, list[int]]:
    groups = caller.get("/compare", params={"group_by": "pe.name"}).json()["groups"]
    return {group["key"]["pe.name"]: group["runs"] for group in groups}


@pytest.mark.timeout(180)
def test_private_runs_are_read_only_by_their_owner_and_admins(
    database_url: str, serve: Callable
) -> None:
    """Others get the same 404 as for a run that does not exist, on every route that reads
    or changes a run, and find it in no list or comparison; owner and admins see it all."""
    ada, bob = add_user(database_url, "ada"), add_user(database_url, "bob")
    boss = add_user(database_url, "boss", "--admin")
    server = serve(auth="on")
    base = f"{server.url}/api/v1"
    with (
        client(base, ada) as as_ada,
        client(base, bob) as as_bob,
        client(base, boss) as as_boss,
        client(base, server.app.state.worker_token) as worker,
    ):
        private = {"spec": PRIVATE_SPEC, "visibility": "private"}
        [secret] = as_ada.post("/specs", json=private).json()["created"]
        sweep = {"base": PRIVATE_SPEC, "seeds": [5, 6], "visibility": "private"}
        swept = as_ada.post("/sweeps", json=sweep).json()
        [shared] = as_ada.post("/specs", json={"spec": SPEC}).json()["created"]
        for run_id, average in ((secret, 80.0), (shared, 60.0)):
            _succeed(database_url, run_id, worker, average)
        hidden = {secret, *swept["created"]}

        nowhere = as_bob.get("/runs/999999").json()["detail"].replace("999999", "{}")
        for run_id in hidden:
            for action, answer in _reads(as_bob, run_id).items():
                assert answer.status_code == 404, f"{action} of {run_id}: {answer.text}"
                assert answer.json()["detail"] == nowhere.format(run_id), action
        assert _listed(as_bob, limit=1000) == {shared}
        assert _listed(as_bob, sweep_id=swept["sweep_id"]) == set()
        assert _compared_pes(as_bob) == {"none": [shared]}
        assert as_bob.get("/health").json()["runs"] == {"SUCCEEDED": 1}
        assert as_ada.get("/health").json()["runs"] == {"SUCCEEDED": 2, "QUEUED": 2}
        with client(base, None) as anonymous:
            assert anonymous.get("/health").json() == {"status": "ok"}, "no counts for strangers"
        listed = {s["id"] for s in as_bob.get("/sweeps").json()["sweeps"]}
        assert swept["sweep_id"] not in listed and swept["sweep_id"] in {
            s["id"] for s in as_ada.get("/sweeps").json()["sweeps"]
        }
        fill = {"spec": PRIVATE_SPEC, "seeds": [7], "sweep_id": swept["sweep_id"]}
        refused = as_bob.post("/specs", json=fill)
        assert refused.status_code == 404, "Bob may not write into (or probe) Ada's private sweep"
        assert refused.json()["detail"] == f"sweep_id: no sweep {swept['sweep_id']}"
        export = as_bob.get("/compare/export", params={"format": "csv", "group_by": "pe.name"})
        assert "learnable" not in export.text and "none" in export.text
        assert as_bob.get(f"/runs/{shared}/metrics/train/loss").json()["values"] == [0.5]

        for reader in (as_ada, as_boss):
            assert _listed(reader, limit=1000) == hidden | {shared}
            assert _compared_pes(reader) == {"learnable": [secret], "none": [shared]}
            run = reader.get(f"/runs/{secret}").json()
            assert run["visibility"] == "private" and run["summary"]["test/average"] == 80.0
            assert reader.get(f"/runs/{secret}/artifacts").json()[0]["kind"] == "plot"
            assert reader.get(f"/runs/{secret}/metrics").json() == ["test/average", "train/loss"]
        assert as_ada.get(f"/runs/{shared}").json()["visibility"] == "team"

        # An ended run's results cannot be rewritten by its owner, nor by an admin, nor
        # through an attempt it never had; its worker's late flush is still kept.
        late = {"key": "test/average", "step": 2, "value": 99.9}
        for caller, attempt in ((as_ada, 1), (as_boss, 1), (as_ada, 3), (worker, 7)):
            answer = caller.post(
                f"/runs/{shared}/metrics", json={"attempt": attempt, "points": [late]}
            )
            assert answer.status_code == 409, answer.text
        assert (
            "has ended (SUCCEEDED)"
            in as_ada.post(f"/runs/{shared}/metrics", json={"attempt": 1, "points": [late]}).json()[
                "detail"
            ]
        )
        flushed = worker.post(f"/runs/{shared}/metrics", json={"attempt": 1, "points": [late]})
        assert flushed.json()["stored"] == 1
        assert as_boss.post(f"/runs/{swept['created'][0]}/cancel").json()["status"] == "CANCELLED"

        # Resubmitting the same cell: Ada reuses her run; Bob gets one of his own, never
        # Ada's private id.
        assert as_ada.post("/specs", json=private).json()["reused"] == [secret]
        again = as_bob.post("/specs", json={"spec": PRIVATE_SPEC}).json()
        assert again["reused"] == [] and again["created"] and secret not in again["created"]
        skipped = as_bob.post("/specs", json={"spec": PRIVATE_SPEC, "policy": "skip"}).json()
        assert skipped["skipped"] == again["created"]


@pytest.mark.timeout(120)
def test_with_auth_off_visibility_is_recorded_and_every_run_is_readable(
    api: httpx.Client,
) -> None:
    [secret] = api.post("/specs", json={"spec": SPEC, "visibility": "private"}).json()["created"]
    assert api.get(f"/runs/{secret}").json()["visibility"] == "private"
    assert secret in _listed(api)
    assert api.get(f"/runs/{secret}/artifacts").json() == []
    refused = api.post("/specs", json={"spec": SPEC, "visibility": "secret"})
    assert refused.status_code == 422 and "visibility" in refused.text
