// The comparison page: finished runs grouped by spec fields, each metric's mean ± std and
// n, the best group in bold, markers where a group differs from the chosen baseline, and
// for Three-Cell the four groups' accuracies as bars against the majority rate.

import { get, query } from "../api.js";
import { barChart } from "../charts.js";
import { fmt, h, table, toNumber } from "../format.js";
import { setParams } from "../nav.js";

const THREE_CELL = ["distance", "orientation", "area", "vector_sum"];

export async function render(root, params) {
  const form = {
    group_by: params.get("group_by") ?? "pe.name",
    metric_prefix: params.get("metric_prefix") ?? "test/",
    sweep_id: params.get("sweep_id") ?? "",
    baseline_pe: params.get("baseline_pe") ?? "",
  };
  const groupBy = form.group_by.split(",").map((s) => s.trim()).filter(Boolean);
  const fetchWith = (baseline) => get(`/compare${query({ group_by: groupBy,
    metric_prefix: form.metric_prefix, sweep_id: form.sweep_id, baseline_pe: baseline })}`);
  let result = await fetchWith(undefined);
  // Paired tests need PEs among the groups; the default baseline is `none` where it ran.
  const pes = groupBy.includes("pe.name")
    ? [...new Set(result.groups.map((g) => g.key["pe.name"]))].sort() : [];
  if (!pes.includes(form.baseline_pe)) form.baseline_pe = pes.includes("none") ? "none" : (pes[0] ?? "");
  if (form.baseline_pe) result = await fetchWith(form.baseline_pe);
  const groups = result.groups;
  const labels = groups.map((g) => label(g, result.group_by));

  const rerender = () => { setParams(form); root.replaceChildren(); render(root, new URLSearchParams(form)); };
  const input = (name, size) => h("input", { id: `compare-${name}`, value: form[name], size,
    onchange: (e) => { form[name] = e.target.value.trim(); rerender(); } });
  root.append(h("h1", {}, "Compare"), h("div", { class: "toolbar" },
    h("label", {}, "group by", input("group_by", 28)),
    h("label", {}, "metrics", input("metric_prefix", 8)),
    h("label", {}, "sweep", input("sweep_id", 6)),
    h("label", {}, "baseline PE", h("select", { id: "compare-baseline", disabled: pes.length === 0,
      onchange: (e) => { form.baseline_pe = e.target.value; rerender(); } },
      pes.map((pe) => h("option", { value: pe, selected: pe === form.baseline_pe }, pe))))));
  if (groups.length === 0) {
    root.append(h("p", { class: "muted" }, "No runs match."));
    return null;
  }
  root.append(h("div", { class: "panel" }, comparisonTable(groups, labels, result)));
  return bars(root, groups, labels);
}

function label(group, groupBy) {
  return groupBy.map((path) => String(group.key[path] ?? "—")).join(" · ");
}

// Accuracy-like metrics are better high, losses and errors low.
const lowerIsBetter = (name) => /loss|err/.test(name);

function comparisonTable(groups, labels, result) {
  const names = [...new Set(groups.flatMap((g) => Object.keys(g.metrics)))]
    .filter((n) => !/^bit\d+$/.test(n)).sort(metricOrder);
  const isBaseline = (g) => result.baseline_pe && g.key["pe.name"] === result.baseline_pe;
  const best = Object.fromEntries(names.map((name) => [name, bestMean(groups, name)]));
  const rows = groups.map((group, i) => h("tr", { dataset: { group: labels[i] } },
    h("td", {}, labels[i], isBaseline(group) ? h("span", { class: "muted" }, " (baseline)") : ""),
    h("td", { class: "num" }, group.runs.length),
    h("td", { class: "num" }, group.diverged || ""), h("td", { class: "num" }, group.failed || ""),
    names.map((name) => cell(group, name, best[name]))));
  const headers = ["group", h("th", { class: "num" }, "n"), h("th", { class: "num" }, "diverged"),
    h("th", { class: "num" }, "failed"), names.map((n) => h("th", { class: "num" }, n))];
  const legend = result.baseline_pe
    ? `* differs from ${result.baseline_pe} (paired t-test over shared seeds, Holm-adjusted ` +
      `p < ${result.alpha}); hover a value for its test.`
    : "Group by pe.name to test against a baseline PE.";
  return [table(headers, rows, { id: "comparison" }),
    h("p", { class: "muted" }, `mean ± std over seeds; bold: best. ${legend}`)];
}

function metricOrder(a, b) {
  const rank = (n) => (n === "acc" ? 0 : n === "loss" ? 2 : 1);
  return rank(a) - rank(b) || a.localeCompare(b);
}

function bestMean(groups, name) {
  const means = groups.map((g) => toNumber(g.metrics[name]?.mean)).filter(Number.isFinite);
  if (means.length === 0) return NaN;
  return lowerIsBetter(name) ? Math.min(...means) : Math.max(...means);
}

function cell(group, name, best) {
  const stat = group.metrics[name];
  if (!stat) return h("td", { class: "num muted" }, "—");
  const mean = toNumber(stat.mean);
  const std = toNumber(stat.std);
  const test = group.tests?.[name];
  const marker = test?.verdict === "significant" ? h("span", { class: "sig" }, "*") : "";
  const text = Number.isFinite(std) ? `${fmt(mean)} ± ${fmt(std)}` : fmt(mean);
  return h("td", { class: `num${mean === best ? " best" : ""}`, title: testNote(stat, test) }, text, marker);
}

function testNote(stat, test) {
  const n = `n = ${stat.n}`;
  if (!test) return n;
  if (test.verdict === "no test") return `${n}; no test: ${test.reason ?? "not enough pairs"}`;
  return `${n}; ${test.verdict}: ${test.pairs} paired seeds, difference ${fmt(test.mean_difference)}, ` +
    `p = ${fmt(test.p_value)}, Holm p = ${fmt(test.p_holm)}`;
}

// Three-Cell groups as bars (± std whiskers) with each group's majority rate.
function bars(root, groups, labels) {
  const withCells = groups.map((g, i) => [g, labels[i]])
    .filter(([g]) => THREE_CELL.some((name) => g.metrics[name]));
  if (withCells.length === 0) return null;
  const canvas = h("canvas", { id: "chart-three-cell" });
  root.append(h("div", { class: "panel" }, h("h2", {}, "Three-Cell: accuracy by question"),
    h("div", { class: "chart", style: "height: 340px" }, canvas)));
  const series = withCells.map(([g, l]) => ({
    label: l,
    means: THREE_CELL.map((n) => toNumber(g.metrics[n]?.mean)),
    stds: THREE_CELL.map((n) => toNumber(g.metrics[n]?.std)),
  }));
  // One majority line only when every group was tested on the same test set.
  const rateSets = new Set(withCells.map(([g]) => JSON.stringify(THREE_CELL.map((n) => g.baseline?.[n]))));
  const rates = THREE_CELL.map((n) => toNumber(withCells.find(([g]) => n in g.baseline)?.[0].baseline[n]));
  const shared = rateSets.size === 1 && rates.some(Number.isFinite);
  const reference = shared ? { label: "majority rate", values: rates } : null;
  const chart = barChart(canvas, THREE_CELL, series, reference);
  return () => chart.destroy();
}
