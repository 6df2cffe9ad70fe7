"""Metric ingest and reads against a real server: idempotence, exact special values."""

from __future__ import annotations

import math

import httpx

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}


def make_run(api: httpx.Client) -> int:
    [run_id] = api.post("/specs", json={"spec": SPEC}).json()["created"]
    return run_id


def test_batch_ingest_is_idempotent_by_attempt_key_step(api: httpx.Client) -> None:
    run_id = make_run(api)
    points = [{"key": "train/loss", "step": s, "value": 1.0 / (s + 1)} for s in range(50)]
    first = api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points}).json()
    again = api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points}).json()
    assert (first["stored"], again["stored"]) == (50, 0)
    series = api.get(f"/runs/{run_id}/metrics/train/loss").json()
    assert series["steps"] == list(range(50))
    assert series["values"][49] == 1.0 / 50


def test_nan_and_infinities_round_trip_and_json_has_no_bare_nan(api: httpx.Client) -> None:
    run_id = make_run(api)
    values = ["nan", "+inf", "-inf", -0.0, 2.5]
    points = [{"key": "x", "step": s, "value": v} for s, v in enumerate(values)]
    api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points})
    response = api.get(f"/runs/{run_id}/metrics/x")
    assert "NaN" not in response.text and "Infinity" not in response.text
    got = response.json()["values"]
    assert got[:3] == ["nan", "+inf", "-inf"]
    assert got[3] == 0.0 and math.copysign(1.0, got[3]) == -1.0
    assert got[4] == 2.5
    summary = api.get(f"/runs/{run_id}").json()["summary"]
    assert summary["x"] == 2.5


def test_later_attempt_supersedes_earlier_points_at_the_same_step(api: httpx.Client) -> None:
    run_id = make_run(api)
    old = [{"key": "val/acc", "step": s, "value": 10.0} for s in (1, 2, 3)]
    new = [{"key": "val/acc", "step": s, "value": 20.0} for s in (2, 3)]
    api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": old})
    api.post(f"/runs/{run_id}/metrics", json={"attempt": 2, "points": new})
    series = api.get(f"/runs/{run_id}/metrics/val/acc").json()
    assert series["steps"] == [1, 2, 3]
    assert series["values"] == [10.0, 20.0, 20.0]


def test_downsampling_keeps_the_last_point(api: httpx.Client) -> None:
    run_id = make_run(api)
    points = [{"key": "lr", "step": s, "value": float(s)} for s in range(1000)]
    api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points})
    series = api.get(f"/runs/{run_id}/metrics/lr", params={"max_points": 10}).json()
    assert len(series["steps"]) <= 10 and series["steps"][-1] == 999


def test_bad_metric_values_are_422_and_nothing_is_written(api: httpx.Client) -> None:
    run_id = make_run(api)
    points = [{"key": "a", "step": 0, "value": 1.0}, {"key": "a", "step": 1, "value": "lots"}]
    response = api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points})
    assert response.status_code == 422
    assert api.get(f"/runs/{run_id}/metrics").json() == []


def test_metrics_of_a_missing_run_are_404(api: httpx.Client) -> None:
    points = [{"key": "a", "step": 0, "value": 1.0}]
    assert api.post("/runs/77/metrics", json={"attempt": 1, "points": points}).status_code == 404


def test_a_batch_that_is_not_utf8_is_422_not_500(api: httpx.Client) -> None:
    run_id = make_run(api)
    body = b'{"attempt": 1, "points": [{"key": "\xff", "step": 0, "value": 1}]}'
    headers = {"content-type": "application/json"}
    response = api.post(f"/runs/{run_id}/metrics", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    assert api.get(f"/runs/{run_id}/metrics").json() == []
