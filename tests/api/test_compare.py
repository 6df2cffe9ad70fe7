"""Comparisons against a real server: statistics, paired tests with Holm, exports."""

from __future__ import annotations

import csv
import io
import math

import httpx
import numpy as np
import pytest
from scipy import stats
from sqlalchemy import update

from service.compare import paired_p_value
from service.db import Run, RunStatus

BASE = {"pe": {"name": "none"}, "dataset": {"name": "three-cell", "preset": "quick"}}
# test/average per PE and seed; "loope" is clearly better, "sinusoid-1d" is noise.
AVERAGE = {
    "none": [50.0, 52.0, 51.0, 49.0],
    "loope": [60.0, 63.0, 61.0, 62.0],
    "sinusoid-1d": [50.5, 51.0, 52.0, 49.5],
}


def finish(server, run_id: int, status: RunStatus) -> None:  # noqa: ANN001
    """Mark a run ended, as the workers' reports would."""
    with server.app.state.store.sessions.begin() as session:
        session.execute(update(Run).where(Run.id == run_id).values(status=status, attempt=1))


def report(api: httpx.Client, run_id: int, values: dict[str, float | str]) -> None:
    points = [{"key": k, "step": 10, "value": v} for k, v in values.items()]
    response = api.post(f"/runs/{run_id}/metrics", json={"attempt": 1, "points": points})
    assert response.status_code == 200, response.text


@pytest.fixture
def finished(server, api: httpx.Client) -> dict[str, list[int]]:  # noqa: ANN001
    """A sweep over three PEs × four seeds, succeeded with known metrics; one diverged run."""
    body = {"base": BASE, "axes": {"pe.name": list(AVERAGE)}, "seeds": [0, 1, 2, 3]}
    assert api.post("/sweeps", json=body).status_code == 201
    runs = api.get("/runs", params={"limit": 100}).json()["runs"]
    ids: dict[str, list[int]] = {}
    for run in runs:
        value = AVERAGE[run["pe"]][run["seed"]]
        report(api, run["id"], {"test/average": value, "test/distance": 1.0 + run["seed"],
                                "baseline/average": 40.0, "train/loss": 0.1})  # fmt: skip
        finish(server, run["id"], RunStatus.SUCCEEDED)
        ids.setdefault(run["pe"], []).append(run["id"])
    [extra] = api.post(
        "/specs", json={"spec": {**BASE, "pe": {"name": "loope"}}, "seeds": [9]}
    ).json()["created"]
    finish(server, extra, RunStatus.DIVERGED)
    return ids


def test_groups_have_mean_std_n_and_a_t_interval(api: httpx.Client, finished) -> None:  # noqa: ANN001
    result = api.get("/compare", params={"group_by": ["pe.name"]}).json()
    groups = {g["key"]["pe.name"]: g for g in result["groups"]}
    loope = groups["loope"]["metrics"]["average"]
    values = np.array(AVERAGE["loope"])
    assert loope["n"] == 4 and loope["mean"] == pytest.approx(values.mean())
    assert loope["std"] == pytest.approx(values.std(ddof=1))
    low, high = stats.t.interval(0.95, 3, loc=values.mean(), scale=stats.sem(values))
    assert loope["ci95"] == [pytest.approx(low), pytest.approx(high)]
    assert groups["loope"]["diverged"] == 1 and groups["none"]["diverged"] == 0
    assert groups["none"]["baseline"] == {"average": 40.0}
    assert "loss" not in groups["none"]["metrics"]  # only the test/ prefix


def test_paired_tests_against_baseline_are_holm_adjusted(api: httpx.Client, finished) -> None:  # noqa: ANN001
    params = {"group_by": ["pe.name", "dataset.name"], "baseline_pe": "none"}
    groups = {g["key"]["pe.name"]: g for g in api.get("/compare", params=params).json()["groups"]}
    assert groups["none"]["tests"] == {}
    raw = {
        (pe, metric): stats.ttest_rel(AVERAGE[pe], AVERAGE["none"]).pvalue
        for pe in ("loope", "sinusoid-1d")
        for metric in ("average",)
    }
    ordered = sorted(raw.values())
    holm = [min(1.0, max((len(ordered) - i) * p for i, p in enumerate(ordered[: k + 1])))
            for k in range(len(ordered))]  # fmt: skip
    loope, sinus = groups["loope"]["tests"]["average"], groups["sinusoid-1d"]["tests"]["average"]
    assert loope["pairs"] == 4 and loope["p_value"] == pytest.approx(raw["loope", "average"])
    assert loope["mean_difference"] == pytest.approx(
        np.mean(np.subtract(AVERAGE["loope"], AVERAGE["none"]))
    )
    assert loope["verdict"] == "significant"
    assert sinus["verdict"] == "not significant"
    assert sorted([loope["p_holm"], sinus["p_holm"]]) == pytest.approx(holm)
    # test/distance is identical across PEs: zero variance of differences, no test
    assert groups["loope"]["tests"]["distance"]["verdict"] == "no test"
    assert "variance" in groups["loope"]["tests"]["distance"]["reason"]


def test_fewer_than_two_shared_seeds_is_no_test(server, api: httpx.Client) -> None:  # noqa: ANN001
    for pe, seeds in (("none", [0, 1]), ("loope", [1, 2])):
        done = api.post("/specs", json={"spec": {**BASE, "pe": {"name": pe}}, "seeds": seeds})
        for run_id in done.json()["created"]:
            report(api, run_id, {"test/acc": float(run_id)})
            finish(server, run_id, RunStatus.SUCCEEDED)
    params = {"group_by": ["pe.name"], "baseline_pe": "none"}
    groups = {g["key"]["pe.name"]: g for g in api.get("/compare", params=params).json()["groups"]}
    test = groups["loope"]["tests"]["acc"]
    assert test["pairs"] == 1 and test["verdict"] == "no test" and test["p_value"] is None


def test_unknown_group_field_and_baseline_without_pe_are_422(api: httpx.Client) -> None:
    response = api.get("/compare", params={"group_by": ["pe.nmae"]})
    assert response.status_code == 422 and "'pe.nmae'" in response.text
    response = api.get("/compare", params={"group_by": ["dataset.name"], "baseline_pe": "none"})
    assert response.status_code == 422 and "pe.name" in response.text
    assert api.get("/compare/export", params={"format": "xls"}).status_code == 422
    response = api.get("/compare", params={"group_by": ["pe.name"], "baseline_pe": "lope"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("baseline_pe: unknown PE 'lope'; known: none,")


def test_groups_by_list_and_dict_valued_fields(api: httpx.Client, finished) -> None:  # noqa: ANN001
    """`dataset.fractions` is a list and `pe.options` a dict; both group like any field."""
    group_by = ["pe.name", "dataset.fractions", "pe.options"]
    result = api.get("/compare", params={"group_by": group_by})
    assert result.status_code == 200, result.text
    keys = [g["key"] for g in result.json()["groups"]]
    assert len(keys) == 3 and all(isinstance(k["dataset.fractions"], list) for k in keys)
    markdown = api.get("/compare/export", params={"group_by": group_by, "format": "markdown"})
    assert markdown.status_code == 200 and "| loope |" in markdown.text


def test_exports_in_four_formats(api: httpx.Client, finished) -> None:  # noqa: ANN001
    params = {"group_by": ["pe.name"], "baseline_pe": "none"}
    as_json = api.get("/compare", params=params).json()
    exported = api.get("/compare/export", params={**params, "format": "json"})
    assert exported.json() == as_json

    text = api.get("/compare/export", params={**params, "format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    loope = next(r for r in rows if r["pe.name"] == "loope" and r["metric"] == "average")
    assert float(loope["mean"]) == pytest.approx(np.mean(AVERAGE["loope"]))
    assert loope["verdict"] == "significant" and loope["diverged"] == "1"

    markdown = api.get("/compare/export", params={**params, "format": "markdown"}).text
    header = markdown.splitlines()[0]
    assert header.startswith("| pe.name | n | distance |") and "average" in header
    assert "majority rate" in markdown and "40.00" in markdown and "(n.s.)" in markdown

    latex = api.get("/compare/export", params={**params, "format": "latex"})
    assert latex.headers["content-type"].startswith("application/x-latex")
    assert r"\begin{tabular}" in latex.text and r"pe.name & n & distance" in latex.text
    assert r"$\pm$" in latex.text and "sinusoid-1d" in latex.text


def test_nan_metric_is_reported_not_bare(server, api: httpx.Client) -> None:  # noqa: ANN001
    [run_id] = api.post("/specs", json={"spec": BASE}).json()["created"]
    report(api, run_id, {"test/acc": "nan"})
    finish(server, run_id, RunStatus.SUCCEEDED)
    response = api.get("/compare")
    assert "NaN" not in response.text
    [group] = response.json()["groups"]
    assert group["metrics"]["acc"]["mean"] == "nan" and math.isnan(float("nan"))


@pytest.mark.parametrize("pairs", [2, 3, 17, 2000])
def test_paired_p_value_is_scipys_to_the_last_bit(pairs: int) -> None:
    """The comparison's own paired t-test gives exactly scipy's ttest_rel p-value."""
    rng = np.random.default_rng(pairs)
    pe, baseline = rng.normal(60, 3, pairs), rng.normal(59, 3, pairs)
    expected = float(stats.ttest_rel(pe, baseline).pvalue)
    assert paired_p_value(pe - baseline) == expected
