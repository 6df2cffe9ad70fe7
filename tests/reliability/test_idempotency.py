"""Idempotency keys on a real server, on SQLite and PostgreSQL: one resource per key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from service.db import IdempotencyKey, Run, make_engine

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}


def _post_at_once(url: str, path: str, body: dict, key: str, times: int) -> list[httpx.Response]:
    """`times` clients send the same POST with the same key at the same moment."""

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=60) as client:
            return client.post(path, json=body, headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(max_workers=times) as pool:
        return list(pool.map(send, range(times)))


def _count(database_url: str, column: object) -> int:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        count = connection.execute(select(func.count(column))).scalar_one()
    engine.dispose()
    return count


def test_ten_concurrent_submissions_with_one_key_create_one_run(
    api: httpx.Client, database_url: str
) -> None:
    body = {"spec": SPEC, "seeds": [11], "policy": "force-new"}
    answers = _post_at_once(str(api.base_url), "/specs", body, "submit-once", 10)
    assert {a.status_code for a in answers} == {201}
    assert len({a.content for a in answers}) == 1, "every repeat gets the first answer"
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 9
    assert _count(database_url, Run.id) == 1
    [run_id] = answers[0].json()["created"]
    assert [r["id"] for r in api.get("/runs").json()["runs"]] == [run_id]


def test_a_later_repeat_replays_and_a_new_key_creates_again(api: httpx.Client) -> None:
    body = {"spec": SPEC, "policy": "force-new"}
    first = api.post("/specs", json=body, headers={"Idempotency-Key": "k-1"})
    again = api.post("/specs", json=body, headers={"Idempotency-Key": "k-1"})
    other = api.post("/specs", json=body, headers={"Idempotency-Key": "k-2"})
    assert first.status_code == again.status_code == other.status_code == 201
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert other.json()["created"] != first.json()["created"]
    assert len(api.get("/runs").json()["runs"]) == 2


def test_same_key_with_another_body_is_refused_and_writes_nothing(
    api: httpx.Client, database_url: str
) -> None:
    headers = {"Idempotency-Key": "reused"}
    assert api.post("/specs", json={"spec": SPEC}, headers=headers).status_code == 201
    changed = api.post("/specs", json={"spec": SPEC, "seeds": [5]}, headers=headers)
    assert changed.status_code == 409
    assert "different request" in changed.json()["detail"]
    elsewhere = api.post("/sweeps", json={"base": SPEC}, headers=headers)
    assert elsewhere.status_code == 409
    assert _count(database_url, Run.id) == 1


def test_refused_requests_replay_their_refusal(api: httpx.Client, database_url: str) -> None:
    headers = {"Idempotency-Key": "bad-spec"}
    bad = {"spec": {**SPEC, "pe": {"name": "rainbow"}}}
    first = api.post("/specs", json=bad, headers=headers)
    again = api.post("/specs", json=bad, headers=headers)
    assert first.status_code == again.status_code == 422
    assert first.content == again.content
    assert _count(database_url, Run.id) == 0


def test_concurrent_metric_ingest_with_one_key_stores_points_once(
    api: httpx.Client, database_url: str
) -> None:
    [run_id] = api.post("/specs", json={"spec": SPEC}).json()["created"]
    points = [{"key": "train/loss", "step": s, "value": 1.0 / (s + 1)} for s in range(100)]
    body = {"attempt": 1, "points": points}
    answers = _post_at_once(str(api.base_url), f"/runs/{run_id}/metrics", body, "batch-7", 10)
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["stored"] for a in answers} == {100}, "repeats replay the first answer"
    series = api.get(f"/runs/{run_id}/metrics/train/loss").json()
    assert series["steps"] == list(range(100))


def test_malformed_keys_are_refused_before_anything_is_written(
    api: httpx.Client, database_url: str
) -> None:
    too_long = api.post("/specs", json={"spec": SPEC}, headers={"Idempotency-Key": "k" * 201})
    assert too_long.status_code == 400 and "Idempotency-Key" in too_long.json()["detail"]
    spaced = api.post("/specs", json={"spec": SPEC}, headers={"Idempotency-Key": "a b"})
    assert spaced.status_code == 400
    assert _count(database_url, Run.id) == 0
    assert _count(database_url, IdempotencyKey.id) == 0


def test_the_header_is_documented_on_every_post(api: httpx.Client) -> None:
    schema = httpx.get(str(api.base_url.copy_with(path="/openapi.json"))).json()
    posts = [ops["post"] for ops in schema["paths"].values() if "post" in ops]
    assert posts
    for operation in posts:
        names = [p["name"] for p in operation.get("parameters", [])]
        assert "Idempotency-Key" in names, operation["operationId"]
