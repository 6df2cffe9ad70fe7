// The URL fragment: which view, and that view's query (its filters).

export function parseHash() {
  const [path, search = ""] = (location.hash.slice(1) || "/runs").split("?");
  return { path, params: new URLSearchParams(search) };
}

// Change the current view's query without adding a history entry per keystroke.
export function setParams(params) {
  const { path } = parseHash();
  const search = new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined));
  const text = search.toString();
  history.replaceState(null, "", `#${path}${text ? `?${text}` : ""}`);
}
