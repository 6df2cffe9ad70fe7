"""Hostile input against a real server on both databases: refused with a 4xx naming the
problem, or stored exactly; never a 5xx, never half a write."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

SPEC = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}
LONG = "ü" * 5000


def _raw_post(api: httpx.Client, path: str, text: str) -> httpx.Response:
    """POST a body as given (Python's json writes bare NaN and Infinity when asked)."""
    headers = {"content-type": "application/json"}
    return api.post(path, content=text.encode(), headers=headers)


def _totals(api: httpx.Client) -> tuple[int, int]:
    """How many runs exist, and how many loss points run 1 holds (0 when it has none)."""
    runs = api.get("/runs", params={"limit": 1000}).json()["runs"]
    if not runs:
        return 0, 0
    series = api.get(f"/runs/{runs[0]['id']}/metrics/loss", params={"max_points": 100_000})
    return len(runs), len(series.json()["steps"]) if series.status_code == 200 else 0


@pytest.mark.timeout(120)
def test_100k_element_lists_are_refused_and_write_nothing(api: httpx.Client) -> None:
    [run_id] = api.post("/specs", json={"spec": SPEC}).json()["created"]
    before = _totals(api)
    points = [{"key": "loss", "step": s, "value": 0.5} for s in range(100_000)]
    big_batch = api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points})
    assert big_batch.status_code == 413 and "MAX_BATCH_POINTS" in big_batch.text
    seeds = api.post("/specs", json={"spec": SPEC, "seeds": list(range(100_000))})
    assert seeds.status_code == 422 and "seeds" in seeds.text
    axis = {"train.seed_offset": list(range(100_000))}
    sweep = api.post("/sweeps", json={"base": SPEC, "axes": axis})
    assert sweep.status_code == 413 and "MAX_SWEEP_CELLS" in sweep.text
    assert _totals(api) == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sweeps", {"base": SPEC, "name": LONG}),
        ("/specs", {"spec": {**SPEC, "pe": {"name": LONG}}}),
        ("/specs", {"spec": {**SPEC, "dataset": {"name": LONG}}}),
        ("/users", {"name": LONG}),
    ],
)
def test_5000_character_names_are_refused(api: httpx.Client, path: str, body: dict) -> None:
    answer = api.post(path, json=body)
    assert answer.status_code == 422, answer.text[:300]
    assert answer.json()["detail"], "the refusal says which field"
    assert _totals(api) == (0, 0)


@pytest.mark.timeout(120)
def test_a_5000_character_metric_key_is_refused_and_nothing_is_stored(api: httpx.Client) -> None:
    [run_id] = api.post("/specs", json={"spec": SPEC}).json()["created"]
    points = [{"key": "loss", "step": 0, "value": 1.0}, {"key": LONG, "step": 0, "value": 1.0}]
    answer = api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points})
    assert answer.status_code == 422
    assert api.get(f"/runs/{run_id}/metrics").json() == [], "the valid point was not kept"


NON_FINITE = ["NaN", "Infinity", "-Infinity"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("token", NON_FINITE)
def test_bare_non_finite_numbers_in_numeric_fields_are_refused(
    api: httpx.Client, token: str
) -> None:
    bodies: list[tuple[str, str]] = [
        ("/specs", f'{{"spec": {json.dumps(SPEC)}, "priority": {token}}}'),
        ("/specs", f'{{"spec": {json.dumps(SPEC)}, "seeds": [{token}]}}'),
        ("/specs", json.dumps({"spec": {**SPEC, "train": {"lr": float(token.lower())}}})),
        ("/specs", json.dumps({"spec": {**SPEC, "train": {"epochs": float(token.lower())}}})),
        ("/sweeps", f'{{"base": {json.dumps(SPEC)}, "axes": {{"train.lr": [{token}]}}}}'),
    ]
    for path, text in bodies:
        answer = _raw_post(api, path, text)
        assert answer.status_code == 422, f"{text[:120]} -> {answer.status_code} {answer.text}"
    assert _totals(api) == (0, 0)


@pytest.mark.timeout(120)
def test_bare_non_finite_metric_values_are_stored_exactly(api: httpx.Client) -> None:
    [run_id] = api.post("/specs", json={"spec": SPEC}).json()["created"]
    points = ", ".join(
        f'{{"key": "loss", "step": {step}, "value": {token}}}'
        for step, token in enumerate(NON_FINITE)
    )
    answer = _raw_post(api, f"/runs/{run_id}/metrics", f'{{"attempt": 1, "points": [{points}]}}')
    assert answer.status_code == 200 and answer.json()["stored"] == 3
    series = api.get(f"/runs/{run_id}/metrics/loss")
    assert series.json()["values"] == ["nan", "+inf", "-inf"]
    assert "NaN" not in series.text and "Infinity" not in series.text


@pytest.mark.timeout(120)
def test_unicode_and_control_characters(api: httpx.Client) -> None:
    name = "Σweep 🧪 ‮תשובה‬ 中文 e\u0301"
    created = api.post("/sweeps", json={"base": SPEC, "name": name, "seeds": [1]})
    assert created.status_code == 201
    [run_id] = created.json()["created"]
    key = "val/ακρίβεια 🎯"
    stored = api.post(
        f"/runs/{run_id}/metrics",
        json={"attempt": 1, "points": [{"key": key, "step": 0, "value": 1}]},
    )
    assert stored.json()["stored"] == 1
    assert api.get(f"/runs/{run_id}/metrics").json() == [key]
    for bad in ("nul\x00byte", "bell\x07", "line\nbreak"):
        answer = api.post("/sweeps", json={"base": SPEC, "name": bad})
        assert answer.status_code == 422, repr(bad)
    assert _totals(api)[0] == 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["image-folder", "cifar10"])
def test_dataset_paths_are_kept_verbatim_and_never_opened_by_the_api(
    api: httpx.Client, name: str
) -> None:
    """The API never reads a dataset path: it stores exactly what was sent for the worker."""
    path = "../../../../etc/passwd/../shadow"
    spec: dict[str, Any] = {**SPEC, "dataset": {"name": name, "path": path, "image_size": 32}}
    if name != "image-folder":
        del spec["dataset"]["image_size"]
    answer = api.post("/specs", json={"spec": spec})
    assert answer.status_code == 201, answer.text
    [run_id] = answer.json()["created"]
    run = api.get(f"/runs/{run_id}").json()
    assert run["spec"]["dataset"]["path"] == path
    assert "root:" not in json.dumps(run)
    assert (
        api.post(
            "/specs", json={"spec": {**SPEC, "dataset": {"name": "three-cell", "path": path}}}
        ).status_code
        == 422
    )


def _raw_get(url: str, target: str) -> tuple[int, bytes]:
    """A GET with the request target sent as written (clients normalise `..` away)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/../../../../etc/passwd",
        "/dashboard/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/dashboard/%2e%2e/%2e%2e/%2e%2e/api/app.py",
        "/dashboard/../routes/dashboard.py",
        "/dashboard//etc/passwd",
        "/api/v1/runs/1/metrics/..%2f..%2f..%2fetc%2fpasswd",
    ],
)
def test_path_traversal_serves_no_file_outside_the_dashboard(
    server: object, api: httpx.Client, target: str
) -> None:
    status, data = _raw_get(str(api.base_url).rstrip("/").removesuffix("/api/v1"), target)
    assert 400 <= status < 500, data[:300]
    assert b"root:" not in data and b"import" not in data


@pytest.mark.timeout(120)
def test_artifact_uris_with_traversal_are_records_not_downloads(api: httpx.Client) -> None:
    [run_id] = api.post("/specs", json={"spec": SPEC}).json()["created"]
    uri = "file:///../../etc/passwd"
    body = {"attempt": 1, "kind": "checkpoint", "uri": uri, "size_bytes": 1}
    assert api.post(f"/runs/{run_id}/artifacts", json=body).status_code == 201
    [listed] = api.get(f"/runs/{run_id}/artifacts").json()
    assert listed["uri"] == uri
    assert "root:" not in api.get(f"/runs/{run_id}/artifacts").text
