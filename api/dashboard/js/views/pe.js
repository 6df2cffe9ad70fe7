// The PE view: the cosine similarity of one cell's PE to every cell's, and PESI. Either a PE
// of the catalogue as built (untrained), or the PE of a finished run read from its
// checkpoint: for LOOPE, one map per probe image, their mean and the X_C = 0 map.

import { get, query } from "../api.js";
import { fmt, h, table } from "../format.js";
import { setParams } from "../nav.js";

const MAP_PX = 416;
const SMALL_PX = 128;
const RUN_CHOICES = 1000;
// Viridis-like stops, low to high: readable in grey and for colour-blind readers.
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

export async function render(root, params) {
  const form = {
    run: params.get("run") ?? "",
    pe: params.get("pe") ?? "sinusoid-2d",
    grid: params.get("grid") ?? "14x14",
    cell: params.get("cell") ?? (params.get("run") ? "" : "7,7"),
    order: params.get("order") ?? "",
  };
  const rerender = () => { setParams(form); root.replaceChildren(); return render(root, new URLSearchParams(form)); };
  const finished = await get(`/runs${query({ status: "SUCCEEDED", limit: RUN_CHOICES })}`);
  const runPicker = h("label", {}, "trained run", h("select", { id: "pe-run",
    onchange: (e) => { form.run = e.target.value; form.cell = form.run ? "" : "7,7"; rerender(); } },
  h("option", { value: "" }, "none: catalogue PEs as built"),
  finished.runs.map((r) => h("option", { value: r.id, selected: String(r.id) === form.run },
    `#${r.id} ${r.pe} · ${r.arch} · ${r.dataset} · seed ${r.seed}`))));
  root.append(h("h1", {}, "PE view"));
  if (form.run) return renderRun(root, form, runPicker, rerender);
  return renderCatalogue(root, form, runPicker, rerender);
}

async function renderCatalogue(root, form, runPicker, rerender) {
  const [view, scores] = await Promise.all([
    get(`/pe-map${query({ pe: form.pe, grid: form.grid, cell: form.cell, order: form.order })}`),
    get(`/pesi${query({ grid: form.grid })}`)]);
  const input = (name, size) => h("input", { id: `pe-${name}`, value: form[name], size,
    onchange: (e) => { form[name] = e.target.value.trim(); rerender(); } });
  const names = scores.rows.map((r) => r.pe);
  root.append(h("div", { class: "toolbar" }, runPicker,
    h("label", {}, "PE", h("select", { id: "pe-name", onchange: (e) => { form.pe = e.target.value; rerender(); } },
      names.map((n) => h("option", { value: n, selected: n === form.pe }, n)))),
    h("label", {}, "order", input("order", 8)), h("label", {}, "grid", input("grid", 6)),
    h("label", {}, "centre cell", input("cell", 5))));

  const range = rangeOf([view.map]);
  const canvas = heatmap(view.map, view.cell, { id: "pe-map", size: MAP_PX, range,
    onPick: (row, col) => { form.cell = `${row},${col}`; rerender(); } });
  root.append(h("div", { class: "grid2" },
    h("div", { class: "panel" }, h("h2", {}, `Cosine similarity to cell (${view.cell.join(", ")})`),
      h("p", { class: "muted", id: "pe-width" }, `PE width D = ${view.dim}, as built with seed ${view.seed}`),
      canvas, scale(range), view.note ? h("p", { class: "muted", id: "pe-note" }, view.note) : "",
      h("p", { class: "muted" }, "Click a cell to centre the map on it. Choose a trained run above to see its learned PE.")),
    h("div", { class: "panel" }, h("h2", {}, `PESI on ${scores.grid.join("×")}, D = ${scores.dim}`),
      pesiTable(scores, form.pe), pesiLegend())));
  return null;
}

// The trained PE of one run: the main map (the mean over probe images for an
// image-conditioned PE, else the trained table), one small map per panel, and PESI.
async function renderRun(root, form, runPicker, rerender) {
  root.append(h("div", { class: "toolbar" }, runPicker));
  const view = await get(`/runs/${form.run}/pe-view${query({ cell: form.cell })}`);
  const pick = (row, col) => { form.cell = `${row},${col}`; rerender(); };
  const range = rangeOf(view.panels.map((p) => p.map));
  const main = view.panels.find((p) => p.kind === "mean" || p.kind === "trained");
  const source = view.image_conditioned
    ? `${view.probe.count} probe images of the run's dataset, drawn with seed ${view.probe.seed} (not training images)`
    : "the trained table (this PE does not look at the image)";
  root.append(h("div", { class: "grid2" },
    h("div", { class: "panel" },
      h("h2", {}, `Run #${view.run_id}: ${view.pe}, trained (checkpoint of epoch ${view.checkpoint.epoch ?? "?"})`),
      h("p", { class: "muted", id: "run-pe-note" }, `Cosine similarity to cell (${view.cell.join(", ")}) of the PE on ${source}.`),
      h("h2", {}, main.label),
      heatmap(main.map, view.cell, { id: "pe-map", size: MAP_PX, range, onPick: pick }), scale(range),
      h("p", { class: "muted" }, "Click a cell to centre every map on it; all maps share this colour scale.")),
    h("div", { class: "panel" }, h("h2", {}, "PESI of the trained PE"), runPesiTable(view.panels), pesiLegend())));
  if (view.panels.length > 1) {
    root.append(h("div", { class: "panel" }, h("h2", {}, "Every map"),
      h("div", { class: "maps", id: "pe-panels" }, view.panels.map((panel, i) => smallPanel(panel, i, view, range, pick)))));
  }
  return null;
}

function smallPanel(panel, index, view, range, pick) {
  const figure = h("figure", { class: "pe-panel", dataset: { kind: panel.kind } });
  if (panel.colours) figure.append(imageCanvas(panel.colours, `pe-image-${index}`));
  figure.append(heatmap(panel.map, view.cell, { id: `pe-map-${index}`, size: SMALL_PX, range, onPick: pick }),
    h("figcaption", {}, panel.label));
  return figure;
}

// The probe image as the PE sees it per patch: each patch's mean colour.
function imageCanvas(colours, id) {
  const [rows, cols] = [colours.length, colours[0].length];
  const px = Math.max(2, Math.floor(SMALL_PX / Math.max(rows, cols)));
  const canvas = h("canvas", { id, class: "heat", width: cols * px, height: rows * px });
  const ctx = canvas.getContext("2d");
  colours.forEach((line, i) => line.forEach(([r, g, b], j) => {
    ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
    ctx.fillRect(j * px, i * px, px, px);
  }));
  return canvas;
}

// Low and high ends of the maps' values, so that PEs whose similarities all lie near 1
// still show their structure; the legend gives the range.
function rangeOf(maps) {
  const values = maps.flat(2);
  return [Math.min(...values), Math.max(...values)];
}

function colour(t) {
  const x = Math.max(0, Math.min(1, t)) * (STOPS.length - 1);
  const i = Math.min(Math.floor(x), STOPS.length - 2);
  const f = x - i;
  const [r, g, b] = STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
  return `rgb(${r}, ${g}, ${b})`;
}

function heatmap(map, cell, { id, size, range: [lo, hi], onPick }) {
  const [rows, cols] = [map.length, map[0].length];
  const px = Math.max(2, Math.floor(size / Math.max(rows, cols)));
  const canvas = h("canvas", { id, class: "heat", width: cols * px, height: rows * px,
    dataset: { cellPx: px } });
  const ctx = canvas.getContext("2d");
  map.forEach((line, i) => line.forEach((value, j) => {
    ctx.fillStyle = colour(hi > lo ? (value - lo) / (hi - lo) : 1);
    ctx.fillRect(j * px, i * px, px, px);
  }));
  ctx.strokeStyle = "#e03131";
  ctx.lineWidth = 2;
  ctx.strokeRect(cell[1] * px + 1, cell[0] * px + 1, px - 2, px - 2);
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    onPick(Math.floor((event.clientY - box.top) / px), Math.floor((event.clientX - box.left) / px));
  });
  return canvas;
}

function scale([lo, hi]) {
  const steps = [0, 0.25, 0.5, 0.75, 1];
  return h("div", { class: "legend", id: "pe-scale" }, steps.map((t) => h("span",
    { class: "seed", style: `background: ${colour(t)}; color: ${t > 0.6 ? "#212529" : "#fff"}` },
    fmt(lo + t * (hi - lo)))));
}

const SCORE_HEADERS = ["M_U", "M_D", "A_SU"].map((name) => h("th", { class: "num" }, name));
const scoreCells = (scores) => ["M_U", "M_D", "A_SU"].map((name) => h("td", { class: "num" }, fmt(scores[name])));

function pesiLegend() {
  return h("p", { class: "muted" }, "M_U and M_D: monotonicity, ideal 2; A_SU: asymmetry, ideal 0.");
}

function pesiTable(scores, selected) {
  const rows = scores.rows.map((row) => h("tr", { dataset: { pe: row.pe }, class: row.pe === selected ? "best" : undefined },
    h("td", {}, row.pe, row.trainable ? h("span", { class: "muted" }, " (as initialised)") : ""),
    scoreCells(row)));
  return table(["PE", ...SCORE_HEADERS.map((th) => th.cloneNode(true))], rows, { id: "pesi" });
}

function runPesiTable(panels) {
  const rows = panels.map((panel) => h("tr", { dataset: { kind: panel.kind },
    class: panel.kind === "image" ? undefined : "best" }, h("td", {}, panel.label), scoreCells(panel.pesi)));
  return table(["PE of", ...SCORE_HEADERS.map((th) => th.cloneNode(true))], rows, { id: "run-pesi" });
}
