"""The dashboard in headless Chromium against a real server holding real finished runs.

The runs are created through the REST API and reported exactly as a worker reports them
(claimed, started, metrics, finished). Every page must load, show the API's numbers, draw
non-empty charts and log no console error; screenshots go to test-artifacts/dashboard/.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.db import FailureKind
from service.settings import Settings
from tests.api.test_dashboard_pe_view import tiny_spec, train_for_real
from tests.conftest import ThreadServer

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
GROUPS = ("distance", "orientation", "area", "vector_sum", "average")
EPOCHS = 4
STEPS_PER_EPOCH = 10
BASE = {
    "dataset": {"name": "three-cell", "preset": "quick"},
    "train": {"epochs": EPOCHS},
    "pe": {"name": "none"},
}
FIRST_PALETTE_RGB = (0x3B, 0x5B, 0xDB)
DIVERGED_RGB = (0xFA, 0x52, 0x52)


@dataclass
class Served:
    url: str
    api: httpx.Client
    runs: dict[str, int]
    database: str


def _epoch_metrics(pe: str, seed: int, epoch: int) -> dict[str, float]:
    """A learning curve that falls with the epoch and differs by PE and seed."""
    jitter = {"none": (0.0, 0.0, 0.0), "loope": (0.0, 0.8, -0.5)}[pe][seed % 3]
    lift = {"none": 0.0, "loope": 9.0}[pe] + 1.5 * seed + jitter
    metrics = {"train/loss": 0.7 * math.exp(-0.4 * epoch) + 0.01 * seed}
    metrics |= {"val/loss": metrics["train/loss"] + 0.05, "epoch": float(epoch)}
    metrics |= {"lr": 1e-3 * math.cos(math.pi * epoch / (2 * EPOCHS))}
    for i, group in enumerate(GROUPS):
        metrics[f"val/{group}"] = 50.0 + lift + 4.0 * epoch + i
    metrics["val/acc"] = metrics["val/average"]
    return metrics


def _final_metrics(pe: str, seed: int) -> dict[str, float]:
    last = _epoch_metrics(pe, seed, EPOCHS)
    test = {f"test/{g}": last[f"val/{g}"] - 1.0 for g in GROUPS}
    majority = {f"baseline/{g}": 55.0 + i for i, g in enumerate(GROUPS)}
    return test | {"test/acc": test["test/average"], "test/loss": last["val/loss"]} | majority


def _post_metrics(api: httpx.Client, run_id: int, attempt: int, points: list[dict]) -> None:
    response = api.post(f"/runs/{run_id}/metrics", json={"attempt": attempt, "points": points})
    assert response.status_code == 200, response.text


def _points(step: int, metrics: dict[str, float | str]) -> list[dict]:
    return [{"key": key, "step": step, "value": value} for key, value in metrics.items()]


def _train(api: httpx.Client, queue, run_id: int, pe: str, seed: int, epochs: range) -> int:
    """Claim the run and report `epochs` as the worker would; returns the attempt number."""
    claimed = queue.claim(run_id, lease_s=600)
    assert claimed is not None, f"run {run_id} could not be claimed"
    attempt = claimed[0].attempt
    resumed = epochs.start - 1 if epochs.start > 1 else None
    started = {"attempt": attempt, "node": "node-a", "resumed_from_epoch": resumed}
    assert api.post(f"/runs/{run_id}/started", json=started).status_code == 204
    for epoch in epochs:
        step = epoch * STEPS_PER_EPOCH
        metrics = _epoch_metrics(pe, seed, epoch)
        _post_metrics(api, run_id, attempt, _points(step, metrics))
    return attempt


def _finish(api: httpx.Client, run_id: int, attempt: int, outcome: str, **extra: str) -> None:
    body = {"attempt": attempt, "outcome": outcome, **extra}
    response = api.post(f"/runs/{run_id}/finished", json=body)
    assert response.status_code == 200, response.text


def _populate(api: httpx.Client, queue) -> dict[str, int]:
    """A sweep of two PEs × three seeds, finished (one resumed); three more seeds filled into
    it: one failed, one diverged, one still queued; and a run of one of its specs outside it."""
    base = BASE | {"resources": {"cpus": 2}}  # what "Fill missing" must carry over
    sweep = {"base": base, "axes": {"pe.name": ["none", "loope"]}, "seeds": [0, 1, 2]}
    submitted = api.post("/sweeps", json=sweep).json()
    created, sweep_id = submitted["created"], submitted["sweep_id"]
    cells = [(pe, seed) for pe in ("none", "loope") for seed in (0, 1, 2)]
    runs = dict(zip([f"{pe}-{seed}" for pe, seed in cells], created, strict=True))
    for (pe, seed), run_id in zip(cells, created, strict=True):
        if (pe, seed) == ("none", 1):
            first = _train(api, queue, run_id, pe, seed, range(1, 3))
            assert queue.requeue(run_id, first, FailureKind.INFRA_LOST, "worker lost")
            attempt = _train(api, queue, run_id, pe, seed, range(3, EPOCHS + 1))
        else:
            attempt = _train(api, queue, run_id, pe, seed, range(1, EPOCHS + 1))
        _post_metrics(
            api, run_id, attempt, _points(EPOCHS * STEPS_PER_EPOCH, _final_metrics(pe, seed))
        )
        checkpoint = {"attempt": attempt, "kind": "checkpoint", "uri": f"file:///ckpt/{run_id}.pt"}
        api.post(f"/runs/{run_id}/artifacts", json=checkpoint | {"size_bytes": 3_500_000})
        _finish(api, run_id, attempt, "succeeded")

    loope = BASE | {"pe": {"name": "loope"}}
    fill = {"sweep_id": sweep_id}
    [failing] = api.post("/specs", json={"spec": loope, "seeds": [5]} | fill).json()["created"]
    attempt = _train(api, queue, failing, "loope", 5, range(1, 2))
    reason = "Traceback (most recent call last):\nValueError: patch grid 7x7 does not divide 32"
    _finish(api, failing, attempt, "failed", failure_kind="user_code", reason=reason)
    runs["failed"] = failing

    hot = {"spec": BASE | {"name": "hot"}, "seeds": [7]}
    [diverging] = api.post("/specs", json=hot | fill).json()["created"]
    attempt = _train(api, queue, diverging, "none", 7, range(1, 2))
    _post_metrics(api, diverging, attempt, _points(15, {"train/loss": "nan"}))
    _finish(api, diverging, attempt, "diverged", reason="loss not finite at step 15")
    runs["diverged"] = diverging

    [queued] = api.post("/specs", json={"spec": loope, "seeds": [9]} | fill).json()["created"]
    runs["queued"] = queued
    [outsider] = api.post("/specs", json={"spec": loope, "seeds": [11]}).json()["created"]
    runs["outsider"] = outsider
    return runs


def _settings(request: pytest.FixtureRequest, folder: Path) -> Settings:
    """A server's settings in `folder`, on the database the fixture's parameter names."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{folder / 'loope.db'}"
    else:
        database_url = request.getfixturevalue("postgres").new_database()
    return Settings(data_dir=folder / "data", database_url=database_url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A server on each database in turn, holding the runs of `_populate`."""
    settings = _settings(request, tmp_path_factory.mktemp("dashboard"))
    with (
        ThreadServer(settings, dispatch=False) as server,
        httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as api,
    ):
        queue = server.server.config.app.state.queue
        yield Served(server.url, api, _populate(api, queue), request.param)


@dataclass
class Trained:
    url: str
    api: httpx.Client
    loope: int
    sweeps: list[int]
    database: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def trained_served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trained]:
    """A server on each database holding a tiny LOOPE run trained for real for one epoch
    (through the worker's entry point: real trainer, checkpoint artifact), and two sweeps."""
    settings = _settings(request, tmp_path_factory.mktemp("trained-dashboard"))
    with (
        ThreadServer(settings, dispatch=False) as server,
        httpx.Client(base_url=f"{server.url}/api/v1", timeout=60) as api,
    ):
        [loope] = api.post("/specs", json={"spec": tiny_spec("loope")}).json()["created"]
        assert train_for_real(server, loope) == "succeeded"
        sweeps = []
        for name, pes in (("orders", ["sinusoid-1d", "hilbert-pe"]), ("tables", ["learnable"])):
            sweep = {"name": name, "base": tiny_spec("none"), "seeds": [0, 1]}
            sweep["axes"] = {"pe.name": pes}
            sweeps.append(api.post("/sweeps", json=sweep).json()["sweep_id"])
        yield Trained(server.url, api, loope, sweeps, request.param)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make test does, as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()


@dataclass
class Page:
    """A browser tab with the console errors and failed requests it saw."""

    tab: object
    errors: list[str]

    def open(self, url: str) -> None:
        self.tab.goto(url)
        self.tab.wait_for_selector("#view[data-state=ready], #view[data-state=error]")
        assert self.tab.get_attribute("#view", "data-state") == "ready", self.text("#view")

    def text(self, selector: str) -> str:
        return self.tab.inner_text(selector)

    def texts(self, selector: str) -> list[str]:
        return [node.inner_text() for node in self.tab.query_selector_all(selector)]

    def shot(self, name: str) -> None:
        self.tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def drawn_pixels(self, canvas_id: str, rgb: tuple[int, int, int] = FIRST_PALETTE_RGB) -> int:
        """How many pixels of the canvas are (close to) the colour `rgb`."""
        script = """([id, rgb]) => {
            const canvas = document.getElementById(id);
            const { width, height } = canvas;
            const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
            let n = 0;
            for (let i = 0; i < data.length; i += 4) {
                const near = [0, 1, 2].every((c) => Math.abs(data[i + c] - rgb[c]) < 40);
                if (data[i + 3] > 128 && near) n++;
            }
            return n;
        }"""
        return self.tab.evaluate(script, [canvas_id, list(rgb)])


@pytest.fixture
def page(browser_context: object) -> Iterator[Page]:
    tab = browser_context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    yield Page(tab, errors)
    assert "[object " not in tab.inner_text("body"), "a value was rendered as [object ...]"
    tab.close()
    assert errors == [], errors


def _fmt3(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"


def test_dashboard_files_are_served_and_confined(served: Served) -> None:
    root = httpx.get(f"{served.url}/")
    assert root.status_code == 200 and "text/html" in root.headers["content-type"]
    script = httpx.get(f"{served.url}/dashboard/js/app.js")
    assert "javascript" in script.headers["content-type"]
    licence = httpx.get(f"{served.url}/dashboard/vendor/chart.js.LICENSE.md")
    assert "MIT License" in licence.text
    assert httpx.get(f"{served.url}/dashboard/../routes/dashboard.py").status_code == 404
    assert httpx.get(f"{served.url}/dashboard/%2e%2e/app.py").status_code == 404


def test_runs_page_lists_every_run_with_status_and_failure(served: Served, page: Page) -> None:
    page.open(f"{served.url}/#/runs")
    page.tab.wait_for_selector("#runs tbody tr")
    listed = served.api.get("/runs").json()["runs"]
    rows = page.tab.query_selector_all("#runs tbody tr")
    assert [int(r.get_attribute("data-run")) for r in rows] == [r["id"] for r in listed]
    assert [r.get_attribute("data-status") for r in rows] == [r["status"] for r in listed]
    failed = page.text(f"#runs tr[data-run='{served.runs['failed']}']")
    assert "user_code" in failed and "does not divide 32" in failed
    assert "diverged" in page.text(f"#runs tr[data-run='{served.runs['diverged']}']")
    page.shot(f"{served.database}-runs")

    page.tab.select_option("#filter-status", "FAILED")
    page.tab.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 1")
    assert "#/runs?status=FAILED" in page.tab.url


def test_run_page_draws_learning_curves_and_shows_attempts(served: Served, page: Page) -> None:
    run_id = served.runs["none-1"]
    page.open(f"{served.url}/#/runs/{run_id}")
    run = served.api.get(f"/runs/{run_id}").json()
    for canvas in ("chart-loss", "chart-acc", "chart-lr"):
        assert page.drawn_pixels(canvas) > 100, f"{canvas} has no line drawn"
    summary = dict(
        (row.query_selector("td").inner_text(), row.query_selector("td.num").inner_text())
        for row in page.tab.query_selector_all("#summary tbody tr")
    )
    assert summary["test/average"] == _fmt3(run["summary"]["test/average"])
    assert summary["train/loss"] == _fmt3(run["summary"]["train/loss"])
    attempts = page.texts("#attempts tbody tr")
    assert len(attempts) == 2 and "worker lost" in attempts[0]
    assert attempts[1].split("\t")[2] == "2"  # resumed from epoch 2
    assert '"name": "none"' in page.text("#spec")
    assert "attempts\n2\n" in page.text("#overview")
    assert f"file:///ckpt/{run_id}.pt" in page.text("#artifacts")
    assert "3.3 MiB" in page.text("#artifacts")
    page.shot(f"{served.database}-run-resumed")


def test_diverged_run_says_where_the_loss_stopped_being_finite(served: Served, page: Page) -> None:
    page.open(f"{served.url}/#/runs/{served.runs['diverged']}")
    assert "train/loss is nan at step 15" in page.text("#view")
    page.shot(f"{served.database}-run-diverged")


def test_compare_page_shows_group_statistics_and_three_cell_bars(
    served: Served, page: Page
) -> None:
    page.open(f"{served.url}/#/compare?group_by=pe.name&baseline_pe=none")
    params = {"group_by": "pe.name", "baseline_pe": "none"}
    groups = served.api.get("/compare", params=params).json()["groups"]
    for group in groups:
        row = page.tab.query_selector(f"#comparison tr[data-group='{group['key']['pe.name']}']")
        stat = group["metrics"]["average"]
        cells = row.inner_text()
        assert f"{group['key']['pe.name']}" in cells and "failed" in page.text("#comparison thead")
        assert f"{_fmt3(stat['mean'])} ± {_fmt3(stat['std'])}" in cells
    best = page.texts("#comparison td.best")
    loope_average = next(g for g in groups if g["key"]["pe.name"] == "loope")["metrics"]["average"]
    assert any(text.startswith(_fmt3(loope_average["mean"])) for text in best)
    loope_test = next(g for g in groups if g["key"]["pe.name"] == "loope")["tests"]["average"]
    assert loope_test["verdict"] == "significant"
    marked = page.tab.query_selector_all("#comparison tr[data-group='loope'] td:has(.sig)")
    assert marked and all("3 paired seeds" in td.get_attribute("title") for td in marked)
    assert not page.texts("#comparison tr[data-group='none'] .sig")
    assert page.drawn_pixels("chart-three-cell") > 500, "no bars drawn"
    assert page.drawn_pixels("chart-three-cell", (0x21, 0x25, 0x29)) > 50, "no majority line"
    page.shot(f"{served.database}-compare")


def test_sweep_matrix_shows_cell_states_and_fills_missing_seeds(served: Served, page: Page) -> None:
    sweep_id = served.api.get(f"/runs/{served.runs['none-0']}").json()["sweep_id"]
    page.open(f"{served.url}/#/sweeps/{sweep_id}")
    states = {b.get_attribute("title") for b in page.tab.query_selector_all("#matrix .seed")}
    assert f"seed 5: run #{served.runs['failed']} failed" in states
    assert f"seed 7: run #{served.runs['diverged']} diverged" in states
    assert not any(title.startswith("seed 11") for title in states), "a run outside the sweep"
    assert len(page.tab.query_selector_all("#matrix .seed.MISSING")) == 3
    page.shot(f"{served.database}-sweep-before-fill")

    before = {r["id"] for r in served.api.get("/runs").json()["runs"]}
    page.tab.click("#fill-missing")
    # The matrix is redrawn: wait for it to be back, with nothing missing (an empty page
    # during the redraw has no missing cell either).
    page.tab.wait_for_function(
        "document.querySelectorAll('#matrix .seed').length > 0"
        " && document.querySelectorAll('#matrix .seed.MISSING').length === 0"
    )
    assert len(page.tab.query_selector_all("#matrix .seed")) == 12, "2 PEs x 6 seeds"
    after = served.api.get("/runs").json()["runs"]
    added = sorted((r["pe"], r["seed"], r["status"]) for r in after if r["id"] not in before)
    assert added == [("loope", 7, "QUEUED"), ("none", 5, "QUEUED"), ("none", 9, "QUEUED")]
    members = served.api.get("/runs", params={"sweep_id": sweep_id}).json()["runs"]
    assert {r["id"] for r in after} - before <= {r["id"] for r in members}, "filled into the sweep"
    for run in after:
        if run["id"] not in before:
            filled = served.api.get(f"/runs/{run['id']}").json()
            assert filled["resources"]["cpus"] == 2 and filled["visibility"] == "team"
    page.shot(f"{served.database}-sweep-after-fill")


def test_pe_view_draws_the_similarity_map_and_the_pesi_table(served: Served, page: Page) -> None:
    page.open(f"{served.url}/#/pe?pe=sinusoid-2d&grid=8x8&cell=3,4")
    view = served.api.get("/pe-map", params={"pe": "sinusoid-2d", "grid": "8x8", "cell": "3,4"})
    scores = view.json()["pesi"]
    row = page.text("#pesi tr[data-pe='sinusoid-2d']")
    assert all(_fmt3(scores[name]) in row for name in ("M_U", "M_D", "A_SU"))
    assert page.text("#pe-width") == f"PE width D = {view.json()['dim']}, as built with seed 0"
    highest = page.drawn_pixels("pe-map", (253, 231, 37))
    assert highest > 300, "the centre cell (similarity 1, top of the scale) is not drawn"
    assert page.drawn_pixels("pe-map", (68, 1, 84)) > 300, "the least similar cell is not drawn"
    assert page.texts("#pe-scale span")[-1] == "1"
    page.shot(f"{served.database}-pe-view")

    px = int(page.tab.get_attribute("#pe-map", "data-cell-px"))
    page.tab.click("#pe-map", position={"x": px * 6 + 3, "y": px * 1 + 3})
    page.tab.wait_for_selector("text=Cosine similarity to cell (1, 6)")
    assert "cell=1%2C6" in page.tab.url


def test_diverged_run_is_marked_in_the_list_and_on_its_charts(served: Served, page: Page) -> None:
    diverged = served.runs["diverged"]
    page.open(f"{served.url}/#/runs")
    row = page.tab.query_selector(f"#runs tr[data-run='{diverged}']")
    assert "diverged" in row.get_attribute("class")
    assert "diverged at step 15" in row.inner_text()
    succeeded = page.tab.query_selector(f"#runs tr[data-run='{served.runs['none-0']}']")
    assert succeeded.get_attribute("class") is None

    page.open(f"{served.url}/#/runs/{diverged}")
    assert "This run diverged at step 15" in page.text("#diverged-banner")
    assert page.drawn_pixels("chart-loss") > 20, "the loss before divergence is not drawn"
    marker = page.drawn_pixels("chart-loss", DIVERGED_RGB)
    assert marker > 150, f"no divergence marker on the loss chart ({marker} pixels)"
    healthy = served.runs["none-0"]
    page.open(f"{served.url}/#/runs/{healthy}")
    assert page.tab.query_selector("#diverged-banner") is None
    assert page.drawn_pixels("chart-loss", DIVERGED_RGB) < marker / 4
    page.open(f"{served.url}/#/runs/{diverged}")
    page.shot(f"{served.database}-run-diverged-marked")


def test_pe_view_of_a_trained_loope_run_shows_probe_maps_and_pesi(
    trained_served: Trained, page: Page
) -> None:
    run_id = trained_served.loope
    page.open(f"{trained_served.url}/#/pe?run={run_id}&cell=2,5")
    view = trained_served.api.get(f"/runs/{run_id}/pe-view", params={"cell": "2,5"}).json()
    rows = page.tab.query_selector_all("#run-pesi tbody tr")
    assert len(rows) == len(view["panels"]) == 10
    for row, panel in zip(rows, view["panels"], strict=True):
        cells = row.inner_text().split("\t")
        assert cells[0] == panel["label"]
        assert cells[1:] == [_fmt3(panel["pesi"][name]) for name in ("M_U", "M_D", "A_SU")]
    assert "mean of 8 images" in page.text("#view") and "X_C = 0" in page.text("#view")
    assert "checkpoint of epoch 1" in page.text("#view")
    assert page.drawn_pixels("pe-map", (253, 231, 37)) > 300, "the centre cell is not drawn"
    for i in range(10):
        assert page.drawn_pixels(f"pe-map-{i}", (253, 231, 37)) > 50, f"map {i} is empty"
    for i in range(8):  # each probe image shows its red, green and blue cell
        for rgb in ((255, 0, 0), (0, 255, 0), (0, 0, 255)):
            assert page.drawn_pixels(f"pe-image-{i}", rgb) > 50, f"image {i} lacks {rgb}"
    page.shot(f"{trained_served.database}-pe-view-trained-loope")

    px = int(page.tab.get_attribute("#pe-map", "data-cell-px"))
    page.tab.click("#pe-map", position={"x": px * 6 + 3, "y": px * 1 + 3})
    page.tab.wait_for_selector("text=Cosine similarity to cell (1, 6)")
    assert f"run={run_id}" in page.tab.url and "cell=1%2C6" in page.tab.url


def test_pe_view_picks_a_trained_run_from_the_finished_ones(
    trained_served: Trained, page: Page
) -> None:
    page.open(f"{trained_served.url}/#/pe")
    page.tab.select_option("#pe-run", str(trained_served.loope))
    page.tab.wait_for_selector("#run-pesi")
    assert f"run={trained_served.loope}" in page.tab.url
    assert "Run #" in page.text("#view") and "probe images" in page.text("#run-pe-note")


def test_sweeps_page_lists_sweeps_and_the_matrix_picks_another(
    trained_served: Trained, page: Page
) -> None:
    first, second = trained_served.sweeps
    page.open(f"{trained_served.url}/#/sweeps")
    listed = [
        int(r.get_attribute("data-sweep")) for r in page.tab.query_selector_all("#sweeps tbody tr")
    ]
    assert listed == [first, second]
    assert "queued 4" in page.text(f"#sweeps tr[data-sweep='{first}']")
    assert "orders" in page.text(f"#sweeps tr[data-sweep='{first}']")
    page.shot(f"{trained_served.database}-sweeps-list")

    page.open(f"{trained_served.url}/#/sweeps/{first}")
    options = page.tab.eval_on_selector_all("#sweep-pick option", "os => os.map(o => o.value)")
    assert options == [str(first), str(second)]
    page.tab.select_option("#sweep-pick", str(second))
    page.tab.wait_for_selector(f"text=Sweep {second}")
    page.tab.wait_for_selector("#matrix")
    assert page.tab.url.endswith(f"#/sweeps/{second}")
    assert len(page.tab.query_selector_all("#matrix .seed.QUEUED")) == 2
    assert page.text("#matrix tbody th") == "learnable"
    page.shot(f"{trained_served.database}-sweep-picked")


def test_dashboard_asks_for_a_token_when_the_api_demands_one(
    browser_context: object, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", auth="on")
    with ThreadServer(settings, dispatch=False) as server:
        _, token = server.server.config.app.state.accounts.add_user("ada")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers) as api:
            [run_id] = api.post("/specs", json={"spec": BASE}).json()["created"]
        tab = browser_context.new_page()
        prompts: list[str] = []

        def answer(dialog: object) -> None:
            prompts.append(dialog.message)
            dialog.accept(token)

        tab.on("dialog", answer)
        page = Page(tab, [])
        tab.on("pageerror", lambda e: page.errors.append(str(e)))
        page.open(f"{server.url}/#/runs")
        assert [
            int(r.get_attribute("data-run")) for r in tab.query_selector_all("#runs tbody tr")
        ] == [run_id]
        assert len(prompts) == 1 and "token" in prompts[0]
        # At once, not at the header's 10-second refresh.
        counts = "document.getElementById('health').textContent === 'queued 1'"
        tab.wait_for_function(counts, timeout=5000)
        assert tab.evaluate("localStorage.getItem('loope.token')") == token
        tab.evaluate("localStorage.removeItem('loope.token')")
        tab.close()
        assert page.errors == []
