// The dashboard's router: the URL fragment names the view (#/runs, #/runs/12, #/compare,
// #/sweeps, #/sweeps/3, #/pe) and its query holds the view's filters.

import { get } from "./api.js";
import { h } from "./format.js";
import { parseHash } from "./nav.js";
import * as compare from "./views/compare.js";
import * as pe from "./views/pe.js";
import * as run from "./views/run.js";
import * as runs from "./views/runs.js";
import * as sweeps from "./views/sweeps.js";

const ROUTES = [
  [/^\/runs\/(\d+)$/, run, "runs"],
  [/^\/runs$/, runs, "runs"],
  [/^\/compare$/, compare, "compare"],
  [/^\/sweeps(?:\/(\d+))?$/, sweeps, "sweeps"],
  [/^\/pe$/, pe, "pe"],
];

let cleanup = null;

async function route() {
  if (cleanup) cleanup();
  cleanup = null;
  const root = document.getElementById("view");
  const { path, params } = parseHash();
  const match = ROUTES.find(([pattern]) => pattern.test(path));
  for (const link of document.querySelectorAll("header nav a")) {
    link.classList.toggle("active", match !== undefined && link.dataset.view === match[2]);
  }
  root.replaceChildren();
  if (!match) {
    root.append(h("p", { class: "error" }, `No view at ${path}.`));
    return;
  }
  const [pattern, view] = match;
  root.dataset.state = "loading";
  try {
    cleanup = (await view.render(root, params, ...path.match(pattern).slice(1))) ?? null;
    root.dataset.state = "ready";
  } catch (error) {
    root.append(h("p", { class: "error" }, error.message));
    root.dataset.state = "error";
  }
}

async function showHealth() {
  try {
    const health = await get("/health");
    // Without a token (auth on, not signed in yet) the server gives no counts.
    const parts = Object.entries(health.runs ?? {}).map(([s, n]) => `${s.toLowerCase()} ${n}`);
    document.getElementById("health").textContent = health.runs === undefined
      ? "signed out" : parts.join(" · ") || "no runs yet";
  } catch (error) {
    document.getElementById("health").textContent = `API unreachable: ${error.message}`;
  }
}

window.addEventListener("hashchange", route);
// The header's counts follow the first page, which asks for a token when the server needs one.
route().then(showHealth);
setInterval(showHealth, 10000);
