"""Teams against a real server: tokens made by `loope user add`, owners, admins, workers."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from api.app import create_app
from loope.cli.app import app as cli
from service.auth import AuthConfigError, auth_required
from service.db import make_engine
from service.settings import Settings

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}


def add_user(database_url: str, name: str, *flags: str) -> str:
    """Run `loope user add` and return the token it printed."""
    result = CliRunner().invoke(cli, ["user", "add", name, *flags, "--database-url", database_url])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=30)


def test_owner_or_admin_may_cancel_and_retry(database_url: str, serve: Callable) -> None:
    ada, bob = add_user(database_url, "ada"), add_user(database_url, "bob")
    root = add_user(database_url, "root", "--admin")
    server = serve(auth="on")
    with client(server.url, ada) as as_ada, client(server.url, bob) as as_bob:
        assert client(server.url, None).get("/runs").status_code == 401
        assert client(server.url, "loope_forged").get("/runs").status_code == 401
        [run_id] = as_ada.post("/specs", json={"spec": SPEC}).json()["created"]
        assert as_ada.get(f"/runs/{run_id}").json()["owner"] == "ada"

        refused = as_bob.post(f"/runs/{run_id}/cancel")
        assert refused.status_code == 403 and "owner" in refused.json()["detail"]
        assert as_ada.post(f"/runs/{run_id}/cancel").json()["status"] == "CANCELLED"
        assert as_bob.post(f"/runs/{run_id}/retry").status_code == 403
        assert as_ada.post(f"/runs/{run_id}/retry").json()["status"] == "QUEUED"
        assert as_ada.post(f"/runs/{run_id}/retry").status_code == 409
        with client(server.url, root) as as_root:
            assert as_root.post(f"/runs/{run_id}/cancel").status_code == 200
            assert as_root.get("/users/me").json() == {"id": 3, "name": "root", "role": "admin"}
        assert as_bob.get("/runs", params={"mine": True}).json()["runs"] == []


def test_workers_report_with_the_service_token_only(database_url: str, serve: Callable) -> None:
    ada = add_user(database_url, "ada")
    server = serve(auth="on")
    worker_token = server.app.state.worker_token
    with client(server.url, ada) as as_ada, client(server.url, worker_token) as as_worker:
        [run_id] = as_ada.post("/specs", json={"spec": SPEC}).json()["created"]
        started = {"attempt": 1, "node": "n"}
        assert as_ada.post(f"/runs/{run_id}/started", json=started).status_code == 403
        # past auth: the queue answers that attempt 1 was never claimed (no dispatcher here)
        assert as_worker.post(f"/runs/{run_id}/started", json=started).status_code == 409
        points = {"attempt": 1, "points": [{"key": "a", "step": 0, "value": 1.0}]}
        assert as_worker.post(f"/runs/{run_id}/metrics", json=points).json()["stored"] == 1
        assert as_worker.post("/specs", json={"spec": SPEC}).status_code == 201


def test_tokens_are_stored_hashed_and_names_are_unique(database_url: str) -> None:
    token = add_user(database_url, "ada")
    again = CliRunner().invoke(cli, ["user", "add", "ada", "--database-url", database_url])
    assert again.exit_code == 1 and "exists already" in again.output
    engine = make_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT token_hash FROM api_tokens")).scalars().all()
    engine.dispose()
    assert len(stored) == 1 and token not in stored[0] and len(stored[0]) == 64


def test_auth_off_only_on_loopback_and_said_at_start(
    serve: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(AuthConfigError, match="loopback"):
        create_app(Settings(host="0.0.0.0", auth="off"), dispatch=False)
    assert auth_required("auto", "0.0.0.0") and auth_required("auto", "10.1.2.3")
    assert not auth_required("auto", "127.0.0.1") and not auth_required("auto", "::1")
    with caplog.at_level(logging.WARNING, logger="api.app"):
        server = serve()
    assert any("auth is OFF" in r.getMessage() for r in caplog.records)
    with client(server.url, None) as anonymous:
        assert anonymous.get("/users/me").json()["role"] == "admin"


def test_a_user_name_outside_the_rule_is_refused_naming_the_field(api: httpx.Client) -> None:
    answer = api.post("/users", json={"name": "ada lovelace"})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith("name: user name 'ada lovelace': 1 to 64 ASCII letters")
    assert api.post("/users", json={"name": "ada"}).status_code == 201
