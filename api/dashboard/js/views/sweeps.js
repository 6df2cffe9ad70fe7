// Sweeps: the list of sweeps (GET /sweeps, page by page), and one sweep's matrix of
// PE × (architecture, dataset) cells, each showing its seeds' states (its own runs only:
// runs of the same spec outside the sweep are not its cells), with a button that submits
// the missing seeds into the sweep and a picker to go to another sweep.

import { allRuns, get, post, query } from "../api.js";
import { h, table, when } from "../format.js";

const STATES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "DIVERGED", "CANCELLED", "MISSING"];
const MAX_SWEEPS = 10000;

export async function render(root, _params, sweepId) {
  return sweepId === undefined ? list(root) : matrix(root, Number(sweepId));
}

// Every sweep, up to `MAX_SWEEPS` (a bound, not a guess), following the cursor.
async function allSweeps() {
  const sweeps = [];
  let cursor = 0;
  while (sweeps.length < MAX_SWEEPS) {
    const page = await get(`/sweeps${query({ cursor, limit: 1000 })}`);
    sweeps.push(...page.sweeps);
    if (page.next_cursor === null) break;
    cursor = page.next_cursor;
  }
  return sweeps;
}

const sweepName = (sweep) => `sweep ${sweep.id}${sweep.name ? ` · ${sweep.name}` : ""}`;

function axesText(axes) {
  return Object.entries(axes).map(([axis, values]) => `${axis}: ${values.join(", ")}`).join("; ");
}

async function list(root) {
  const sweeps = await allSweeps();
  const rows = sweeps.map((sweep) => h("tr", { dataset: { sweep: sweep.id } },
    h("td", {}, h("a", { href: `#/sweeps/${sweep.id}` }, sweepName(sweep))),
    h("td", {}, axesText(sweep.axes)), h("td", {}, sweep.seeds.join(", ")),
    h("td", {}, Object.entries(sweep.runs).map(([s, n]) => `${s.toLowerCase()} ${n}`).join(", ")),
    h("td", {}, sweep.owner ?? "—"), h("td", {}, when(sweep.created_at))));
  root.append(h("h1", {}, "Sweeps"), h("div", { class: "panel" },
    rows.length ? table(["sweep", "axes", "seeds", "runs", "owner", "created"], rows, { id: "sweeps" })
      : h("p", { class: "muted" }, "No sweeps submitted yet.")));
}

function picker(sweeps, sweepId) {
  return h("div", { class: "toolbar" }, h("label", {}, "sweep", h("select", { id: "sweep-pick",
    onchange: (e) => { location.hash = `#/sweeps/${e.target.value}`; } },
  sweeps.map((sweep) => h("option", { value: sweep.id, selected: sweep.id === sweepId }, sweepName(sweep))))));
}

async function matrix(root, sweepId) {
  const [runs, sweeps] = await Promise.all([allRuns({ sweep_id: sweepId }), allSweeps()]);
  const sweep = sweeps.find((s) => s.id === sweepId);
  root.append(h("h1", {}, `Sweep ${sweepId}`), picker(sweeps, sweepId));
  if (sweep === undefined || runs.length === 0) {
    const why = sweep === undefined ? "does not exist" : "has no runs you may read";
    root.append(h("p", { class: "muted" }, `Sweep ${sweepId} ${why}.`));
    return;
  }
  const rowsOf = [...new Set(runs.map((r) => r.pe))].sort();
  const columns = [...new Set(runs.map((r) => `${r.arch} · ${r.dataset}`))].sort();
  // The seeds it was submitted with, and any a fill added.
  const seeds = [...new Set([...sweep.seeds, ...runs.map((r) => r.seed)])].sort((a, b) => a - b);
  const cells = new Map();
  for (const run of runs) {
    const key = `${run.pe}|${run.arch} · ${run.dataset}|${run.spec_hash}`;
    const cell = cells.get(key) ?? { pe: run.pe, column: `${run.arch} · ${run.dataset}`, runs: [] };
    cell.runs.push(run);
    cells.set(key, cell);
  }
  const missing = [...cells.values()].map((cell) => ({ cell,
    seeds: seeds.filter((s) => !cell.runs.some((r) => r.seed === s)) })).filter((m) => m.seeds.length);

  const body = rowsOf.map((pe) => h("tr", {}, h("th", {}, pe), columns.map((column) => h("td", {},
    [...cells.values()].filter((c) => c.pe === pe && c.column === column)
      .map((cell) => seedBadges(cell, seeds))))));
  const fill = h("button", { id: "fill-missing", disabled: missing.length === 0,
    onclick: async () => {
      fill.disabled = true;
      await fillMissing(sweepId, missing);
      root.replaceChildren();
      await matrix(root, sweepId);
    } }, `Fill ${missing.reduce((n, m) => n + m.seeds.length, 0)} missing`);
  root.append(h("div", { class: "panel" },
    h("div", { class: "legend" }, STATES.map((s) => h("span", { class: `seed ${s}` }, s.toLowerCase()))),
    table(["PE", ...columns], body, { id: "matrix", class: "matrix" }), h("p", {}, fill)));
}

function seedBadges(cell, seeds) {
  const bySeed = new Map(cell.runs.map((r) => [r.seed, r]));
  return h("div", { class: "cell" }, seeds.map((seed) => {
    const run = bySeed.get(seed);
    if (!run) return h("span", { class: "seed MISSING", title: `seed ${seed}: missing` }, seed);
    return h("a", { class: `seed ${run.status}`, href: `#/runs/${run.id}`,
      title: `seed ${seed}: run #${run.id} ${run.status.toLowerCase()}` }, seed);
  }));
}

// Each cell's missing seeds are submitted into the sweep, so they become its cells, with
// the resources and visibility of the cell's first run (the API's spec is the canonical one,
// which leaves resources out): a GPU sweep fills with GPU runs, a private one privately.
async function fillMissing(sweepId, missing) {
  for (const { cell, seeds } of missing) {
    const run = await get(`/runs/${cell.runs[0].id}`);
    await post("/specs", { spec: { ...run.spec, resources: run.resources }, seeds,
      policy: "reuse", sweep_id: sweepId, visibility: run.visibility });
  }
}
