// The runs page: every run with its live status, filters, failure kind and reason.

import { get, post, query } from "../api.js";
import { setParams } from "../nav.js";
import { divergedStep, h, statusBadge, table, when } from "../format.js";

const STATUSES = ["", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "DIVERGED", "CANCELLED"];
const LIVE = new Set(["QUEUED", "RUNNING"]);
const REFRESH_MS = 5000;
const PAGE = 100;

export async function render(root, params) {
  const filters = {
    status: params.get("status") ?? "",
    pe: params.get("pe") ?? "",
    sweep_id: params.get("sweep_id") ?? "",
  };
  const body = h("tbody");
  const more = h("button", { class: "quiet", id: "more", onclick: () => load(false) }, "More");
  const note = h("span", { class: "muted", id: "runs-note" });
  let cursor = 0;
  let shown = [];

  async function load(reset) {
    if (reset) cursor = 0;
    const page = await get(`/runs${query({ ...filters, cursor, limit: PAGE })}`);
    shown = reset ? page.runs : shown.concat(page.runs);
    body.replaceChildren(...shown.map(row));
    cursor = page.next_cursor ?? cursor;
    more.hidden = page.next_cursor === null;
    note.textContent = `${shown.length} run${shown.length === 1 ? "" : "s"} shown`;
  }

  function change(name) {
    return (event) => {
      filters[name] = event.target.value.trim();
      setParams(filters);
      load(true);
    };
  }

  const toolbar = h("div", { class: "toolbar" },
    h("label", {}, "status", h("select", { id: "filter-status", onchange: change("status") },
      STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s || "any")))),
    h("label", {}, "PE", h("input", { id: "filter-pe", value: filters.pe, placeholder: "any",
      size: 14, onchange: change("pe") })),
    h("label", {}, "sweep", h("input", { id: "filter-sweep", value: filters.sweep_id,
      placeholder: "any", size: 6, onchange: change("sweep_id") })),
    note);
  const headers = ["run", "status", "PE", "arch", "dataset", "seed", "sweep", "attempt",
    "failure", "reason", "created", "finished", ""];
  root.append(h("h1", {}, "Runs"), h("div", { class: "panel" }, toolbar,
    h("table", { id: "runs" }, table(headers, []).firstChild, body), more));
  await load(true);

  // Live status: refresh while any run shown is queued or running.
  const timer = setInterval(() => {
    if (shown.some((run) => LIVE.has(run.status))) load(true).catch(() => {});
  }, REFRESH_MS);
  return () => clearInterval(timer);

  function row(run) {
    const cancel = LIVE.has(run.status)
      ? h("button", { class: "quiet", onclick: async () => { await post(`/runs/${run.id}/cancel`); load(true); } }, "cancel")
      : "";
    return h("tr", { dataset: { run: run.id, status: run.status },
      class: run.status === "DIVERGED" ? "diverged" : undefined },
      h("td", {}, h("a", { href: `#/runs/${run.id}` }, `#${run.id}`)),
      h("td", {}, statusBadge(run.status)),
      h("td", {}, run.pe), h("td", {}, run.arch), h("td", {}, run.dataset),
      h("td", { class: "num" }, run.seed),
      h("td", {}, run.sweep_id === null ? "—" : h("a", { href: `#/sweeps/${run.sweep_id}` }, run.sweep_id)),
      h("td", { class: "num" }, run.attempt),
      h("td", {}, failure(run)),
      h("td", { class: "reason", title: run.failure_reason ?? "" }, run.failure_reason ?? ""),
      h("td", {}, when(run.created_at)), h("td", {}, when(run.finished_at)),
      h("td", {}, cancel));
  }
}

// The failure kind; a diverged run says at which step its loss stopped being finite.
function failure(run) {
  if (run.status !== "DIVERGED") return run.failure_kind ?? "";
  const step = divergedStep(run.failure_reason);
  return h("span", { class: "diverged-at" }, step === null ? "diverged" : `diverged at step ${step}`);
}
