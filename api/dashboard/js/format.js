// Small formatting and DOM helpers shared by the views.

// A JSON number of the API: a float, or "nan", "+inf", "-inf" for the non-finite ones.
export function toNumber(value) {
  if (value === "nan") return NaN;
  if (value === "+inf") return Infinity;
  if (value === "-inf") return -Infinity;
  return value ?? NaN;
}

export function fmt(value, digits = 3) {
  const x = toNumber(value);
  if (Number.isNaN(x)) return value === null || value === undefined ? "—" : "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "+∞" : "−∞";
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  const abs = Math.abs(x);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return x.toExponential(2);
  return x.toFixed(abs >= 100 ? 1 : digits);
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso.endsWith("Z") || iso.includes("+") ? iso : `${iso}Z`);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

// Build an element: h("td", {class: "num"}, "1.5", child, ...).
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function statusBadge(status) {
  return h("span", { class: `status ${status}` }, status.toLowerCase());
}

export function table(headers, rows, attrs = {}) {
  const head = h("tr", {}, headers.map((name) =>
    typeof name === "string" ? h("th", {}, name) : name));
  return h("table", attrs, h("thead", {}, head), h("tbody", {}, rows));
}

// Colours for series and groups, distinct on a white panel.
export const PALETTE = ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#1098ad", "#f08c00",
  "#c2255c", "#5c940d", "#495057", "#7048e8"];

// The step a DIVERGED run's reason names ("... not finite at step 15"), or null. The
// worker writes the step into the reason; the run's record has no field of its own for it.
export function divergedStep(reason) {
  const match = /\bstep (\d+)/.exec(reason ?? "");
  return match ? Number(match[1]) : null;
}
