"""Bad input against a real server: 422 naming fields, 413 naming limits, never a 500."""

from __future__ import annotations

from collections.abc import Callable

import httpx

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}


def make_run(api: httpx.Client) -> int:
    [run_id] = api.post("/specs", json={"spec": SPEC}).json()["created"]
    return run_id


def test_body_over_the_limit_is_413_naming_it(serve: Callable) -> None:
    server = serve(max_body_bytes=2048)
    with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as api:
        big = {"spec": {**SPEC, "tags": ["x" * 3000]}}
        response = api.post("/specs", json=big)
        assert response.status_code == 413 and "max_body_bytes" in response.json()["detail"]
        assert "2048" in response.json()["detail"]
        chunks = (b'{"spec": ' + b" " * 1024 for _ in range(4))  # streamed, no length
        response = api.post("/specs", content=chunks, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert api.get("/runs").json()["runs"] == []


def test_batch_over_the_limit_is_413_and_writes_nothing(api: httpx.Client) -> None:
    run_id = make_run(api)
    points = [{"key": "a", "step": s, "value": 1.0} for s in range(10_001)]
    response = api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points})
    assert response.status_code == 413 and "MAX_BATCH_POINTS" in response.json()["detail"]
    assert api.get(f"/runs/{run_id}/metrics").json() == []


def test_out_of_range_numbers_and_unknown_fields_are_422_naming_them(api: httpx.Client) -> None:
    run_id = make_run(api)
    cases = [
        ("post", f"/runs/{run_id}/metrics",
         {"attempt": 1, "points": [{"key": "a", "step": 2**40, "value": 1}]}, "step"),
        ("post", f"/runs/{run_id}/metrics",
         {"attempt": 1, "points": [{"key": "a", "step": 0, "value": 1, "unit": "s"}]}, "unit"),
        ("post", f"/runs/{run_id}/metrics",
         {"attempt": 1, "points": [{"key": "a\u0000b", "step": 0, "value": 1}]}, "key"),
        ("post", "/specs", {"spec": SPEC, "seeds": [2**40]}, "seeds"),
        ("post", "/specs", {"spec": SPEC, "colour": "red"}, "colour"),
        ("get", "/runs/99999999999999", None, "run_id"),
        ("get", "/runs", None, "cursor"),
    ]  # fmt: skip
    for method, path, body, field in cases:
        params = {"cursor": -1} if field == "cursor" else None
        response = api.request(method, path, json=body, params=params)
        assert response.status_code == 422, (path, body, response.text)
        assert field in response.text, (field, response.text)
    broken = api.post("/specs", content=b'{"spec": ', headers={"content-type": "application/json"})
    assert broken.status_code == 422


def test_unicode_names_keys_and_tags_round_trip(api: httpx.Client) -> None:
    spec = {**SPEC, "name": "Ünïcødé 实验 🚀", "tags": ["ресёрч", "κλειδί"]}
    sweep = api.post("/sweeps", json={"name": "スイープ ✓", "base": spec, "axes": {}})
    [run_id] = sweep.json()["created"]
    key = "验证/精度 ✓"
    points = [{"key": key, "step": 1, "value": 0.5}]
    assert (
        api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points}).status_code
        == 200
    )
    assert api.get(f"/runs/{run_id}/metrics").json() == [key]
    assert api.get(f"/runs/{run_id}/metrics/{key}").json()["values"] == [0.5]
    assert api.get(f"/runs/{run_id}").json()["summary"] == {key: 0.5}


def test_artifacts_are_recorded_once_and_listed(api: httpx.Client) -> None:
    run_id = make_run(api)
    record = {"attempt": 1, "kind": "checkpoint", "uri": "file:///data/runs/1/last.pt",
              "size_bytes": 1234, "sha256": "ab" * 32}  # fmt: skip
    first = api.post(f"/runs/{run_id}/artifacts", json=record)
    again = api.post(f"/runs/{run_id}/artifacts", json=record)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    [listed] = api.get(f"/runs/{run_id}/artifacts").json()
    assert listed["sha256"] == "ab" * 32 and listed["size_bytes"] == 1234
    bad = api.post(f"/runs/{run_id}/artifacts", json={**record, "sha256": "nothex"})
    assert bad.status_code == 422 and "sha256" in bad.text
    assert api.post("/runs/424242/artifacts", json=record).status_code == 404
