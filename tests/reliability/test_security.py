"""Security with auth on, against a real server on both databases: every route but health
and the docs needs a valid token, tokens are kept hashed, users cannot act on others' runs
or borrow others' idempotency keys, and no browser origin is allowed by default."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from loope.cli.app import app as cli
from service.db import make_engine

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
