// The PE view: the cosine similarity of one cell's PE to every cell's, for any PE of the
// catalogue that adds an embedding per patch, and the PESI table of all of them.

import { get, query } from "../api.js";
import { fmt, h, table } from "../format.js";
import { setParams } from "../nav.js";

const MAP_PX = 416;
// Viridis-like stops, low to high: readable in grey and for colour-blind readers.
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

export async function render(root, params) {
  const form = {
    pe: params.get("pe") ?? "sinusoid-2d",
    grid: params.get("grid") ?? "14x14",
    cell: params.get("cell") ?? "7,7",
    order: params.get("order") ?? "",
  };
  const [view, scores] = await Promise.all([
    get(`/pe-map${query(form)}`), get(`/pesi${query({ grid: form.grid })}`)]);
  const rerender = () => { setParams(form); root.replaceChildren(); return render(root, new URLSearchParams(form)); };
  const input = (name, size) => h("input", { id: `pe-${name}`, value: form[name], size,
    onchange: (e) => { form[name] = e.target.value.trim(); rerender(); } });
  const names = scores.rows.map((r) => r.pe);
  root.append(h("h1", {}, "PE view"), h("div", { class: "toolbar" },
    h("label", {}, "PE", h("select", { id: "pe-name", onchange: (e) => { form.pe = e.target.value; rerender(); } },
      names.map((n) => h("option", { value: n, selected: n === form.pe }, n)))),
    h("label", {}, "order", input("order", 8)), h("label", {}, "grid", input("grid", 6)),
    h("label", {}, "centre cell", input("cell", 5))));

  const canvas = heatmap(view, (row, col) => { form.cell = `${row},${col}`; rerender(); });
  root.append(h("div", { class: "grid2" },
    h("div", { class: "panel" }, h("h2", {}, `Cosine similarity to cell (${view.cell.join(", ")})`),
      canvas, view.note ? h("p", { class: "muted", id: "pe-note" }, view.note) : "",
      h("p", { class: "muted" }, "Click a cell to centre the map on it.")),
    h("div", { class: "panel" }, h("h2", {}, `PESI on ${scores.grid.join("×")}`),
      pesiTable(scores, form.pe),
      h("p", { class: "muted" }, "M_U and M_D: monotonicity, ideal 2; A_SU: asymmetry, ideal 0."))));
  return null;
}

// The map's own range, low to high, so that PEs whose similarities all lie near 1 still
// show their structure; the legend gives the range.
function colour(t) {
  const x = Math.max(0, Math.min(1, t)) * (STOPS.length - 1);
  const i = Math.min(Math.floor(x), STOPS.length - 2);
  const f = x - i;
  const [r, g, b] = STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
  return `rgb(${r}, ${g}, ${b})`;
}

function heatmap(view, onPick) {
  const [rows, cols] = view.grid;
  const px = Math.max(8, Math.floor(MAP_PX / Math.max(rows, cols)));
  const values = view.map.flat();
  const [lo, hi] = [Math.min(...values), Math.max(...values)];
  const canvas = h("canvas", { id: "pe-map", class: "heat", width: cols * px, height: rows * px,
    dataset: { cellPx: px } });
  const ctx = canvas.getContext("2d");
  view.map.forEach((line, i) => line.forEach((value, j) => {
    ctx.fillStyle = colour(hi > lo ? (value - lo) / (hi - lo) : 1);
    ctx.fillRect(j * px, i * px, px, px);
  }));
  ctx.strokeStyle = "#e03131";
  ctx.lineWidth = 2;
  ctx.strokeRect(view.cell[1] * px + 1, view.cell[0] * px + 1, px - 2, px - 2);
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    onPick(Math.floor((event.clientY - box.top) / px), Math.floor((event.clientX - box.left) / px));
  });
  return [canvas, scale(lo, hi)];
}

function scale(lo, hi) {
  const steps = [0, 0.25, 0.5, 0.75, 1];
  return h("div", { class: "legend", id: "pe-scale" }, steps.map((t) => h("span",
    { class: "seed", style: `background: ${colour(t)}; color: ${t > 0.6 ? "#212529" : "#fff"}` },
    fmt(lo + t * (hi - lo)))));
}

function pesiTable(scores, selected) {
  const rows = scores.rows.map((row) => h("tr", { dataset: { pe: row.pe }, class: row.pe === selected ? "best" : undefined },
    h("td", {}, row.pe, row.trainable ? h("span", { class: "muted" }, " (as initialised)") : ""),
    h("td", { class: "num" }, fmt(row.M_U)), h("td", { class: "num" }, fmt(row.M_D)),
    h("td", { class: "num" }, fmt(row.A_SU))));
  return table(["PE", h("th", { class: "num" }, "M_U"), h("th", { class: "num" }, "M_D"),
    h("th", { class: "num" }, "A_SU")], rows, { id: "pesi" });
}
