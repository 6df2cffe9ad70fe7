// One run: its learning curves (loss, accuracy, learning rate), the spec, the attempts with
// the epoch each resumed from, the last value of every metric, and its artifacts.

import { get } from "../api.js";
import { lineChart } from "../charts.js";
import { divergedStep, fmt, h, statusBadge, table, toNumber, when } from "../format.js";

const POINTS = 2000;
const CHARTS = [
  { id: "chart-loss", title: "Loss", keys: (keys) => keys.filter((k) => /^(train|val)\/loss$/.test(k)), yLabel: "loss" },
  { id: "chart-acc", title: "Validation accuracy", keys: accuracyKeys, yLabel: "accuracy (%)" },
  { id: "chart-lr", title: "Learning rate", keys: (keys) => keys.filter((k) => k === "lr"), yLabel: "lr" },
];

// val/acc first, then the per-group validation accuracies (Three-Cell: distance, …).
function accuracyKeys(keys) {
  const groups = keys.filter((k) => k.startsWith("val/") && k !== "val/loss" && k !== "val/acc"
    && !/^val\/bit\d+$/.test(k));
  return (keys.includes("val/acc") ? ["val/acc"] : []).concat(groups.sort());
}

export async function render(root, _params, runId) {
  const [run, keys, stored] = await Promise.all([get(`/runs/${runId}`),
    get(`/runs/${runId}/metrics`), get(`/runs/${runId}/artifacts`)]);
  root.append(header(run));
  const seriesOf = {};
  for (const chart of CHARTS) {
    seriesOf[chart.id] = await Promise.all(chart.keys(keys).map((key) =>
      get(`/runs/${runId}/metrics/${key}?max_points=${POINTS}`)));
  }
  const diverged = divergence(run, Object.values(seriesOf).flat());
  if (diverged) root.append(diverged.banner);

  const charts = [];
  const grid = h("div", { class: "grid2" });
  root.append(h("h2", {}, "Learning curves"), grid);
  for (const chart of CHARTS) {
    const series = seriesOf[chart.id];
    if (series.length === 0) continue;
    const canvas = h("canvas", { id: chart.id });
    grid.append(h("div", { class: "panel" }, h("h2", {}, chart.title), nonFinite(series),
      h("div", { class: "chart" }, canvas)));
    charts.push(lineChart(canvas, series, { yLabel: chart.yLabel, marker: diverged?.marker }));
  }
  if (charts.length === 0) grid.append(h("p", { class: "muted" }, "No metrics reported yet."));

  root.append(h("div", { class: "grid2" }, overview(run), summary(run)),
    h("div", { class: "grid2" }, attempts(run), artifacts(stored)),
    h("div", { class: "panel" }, h("h2", {}, "Spec"), h("pre", { id: "spec" }, JSON.stringify(run.spec, null, 2))));
  return () => charts.forEach((chart) => chart.destroy());
}

function header(run) {
  return h("h1", {}, `Run #${run.id} `, statusBadge(run.status),
    h("span", { class: "muted" }, `  ${run.pe} · ${run.arch} · ${run.dataset} · seed ${run.seed}`));
}

function overview(run) {
  const rows = [
    ["spec", run.spec_hash.slice(0, 12)],
    ["sweep", run.sweep_id === null ? "—" : h("a", { href: `#/sweeps/${run.sweep_id}` }, run.sweep_id)],
    ["priority", run.priority], ["attempts", run.attempt],
    ["created", when(run.created_at)], ["started", when(run.started_at)],
    ["finished", when(run.finished_at)],
  ];
  if (run.failure_kind) rows.push(["failure", run.failure_kind]);
  const panel = h("div", { class: "panel", id: "overview" }, h("h2", {}, "Run"),
    h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  if (run.failure_reason) panel.append(h("pre", { id: "failure-reason" }, run.failure_reason));
  return panel;
}

function summary(run) {
  const entries = Object.entries(run.summary ?? {}).filter(([k]) => !/\/bit\d+$/.test(k)).sort();
  const rows = entries.map(([key, value]) =>
    h("tr", {}, h("td", {}, key), h("td", { class: "num" }, fmt(value))));
  return h("div", { class: "panel" }, h("h2", {}, "Last values"),
    rows.length ? table(["metric", h("th", { class: "num" }, "last")], rows, { id: "summary" })
      : h("p", { class: "muted" }, "none yet"));
}

function attempts(run) {
  const rows = (run.attempts ?? []).map((a) => h("tr", {},
    h("td", { class: "num" }, a.number), h("td", {}, a.node ?? "—"),
    h("td", { class: "num" }, a.resumed_from_epoch ?? "start"),
    h("td", {}, when(a.started_at)), h("td", {}, when(a.ended_at)),
    h("td", { class: "reason", title: a.exit_reason ?? "" }, a.exit_reason ?? "")));
  return h("div", { class: "panel" }, h("h2", {}, "Attempts"),
    table(["#", "node", "resumed from epoch", "started", "ended", "exit"], rows, { id: "attempts" }));
}

// Checkpoints, plots and PE maps the attempts wrote to the artifact store.
function artifacts(list) {
  const rows = list.map((a) => h("tr", {}, h("td", {}, a.kind), h("td", { class: "num" }, a.attempt),
    h("td", { class: "reason", title: a.uri }, a.uri),
    h("td", { class: "num" }, a.size_bytes === null ? "—" : bytes(a.size_bytes)),
    h("td", { title: a.sha256 ?? "" }, a.sha256 ? a.sha256.slice(0, 10) : "—")));
  const body = rows.length
    ? table(["kind", "attempt", "where", "size", "sha256"], rows, { id: "artifacts" })
    : h("p", { class: "muted" }, "No artifacts recorded for this run.");
  return h("div", { class: "panel" }, h("h2", {}, "Artifacts"), body);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  const i = n > 0 ? Math.min(units.length - 1, Math.floor(Math.log2(n) / 10)) : 0;
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

// The first step at which a series is not finite, with its key and value, or null.
function firstNonFinite(series) {
  const i = series.values.findIndex((v) => !Number.isFinite(toNumber(v)));
  return i < 0 ? null : { key: series.key, value: series.values[i], step: series.steps[i] };
}

// Say where a series stopped being finite: the chart shows a gap there.
function nonFinite(seriesList) {
  const notes = seriesList.map(firstNonFinite).filter((found) => found !== null)
    .map((found) => `${found.key} is ${found.value} at step ${found.step}`);
  return notes.length ? h("p", { class: "error" }, notes.join("; ")) : "";
}

// A DIVERGED run's step (from its reason, else its first non-finite point): a banner over
// the page and a marker on every chart.
function divergence(run, seriesList) {
  if (run.status !== "DIVERGED") return null;
  const found = seriesList.map(firstNonFinite).filter((f) => f !== null);
  const step = divergedStep(run.failure_reason) ?? (found.length ? Math.min(...found.map((f) => f.step)) : null);
  const label = step === null ? "diverged" : `diverged at step ${step}`;
  const banner = h("p", { class: "banner", id: "diverged-banner" }, h("span", { class: "diverged-at" },
    `This run ${label}`), run.failure_reason ? `: ${run.failure_reason}` : ".");
  return { banner, marker: step === null ? null : { x: step, label } };
}
