// The REST API as the dashboard sees it: JSON over fetch, with the bearer token when one
// is set. A 401 asks for a token once, keeps it in localStorage and retries the request.

export const API = "/api/v1";
const TOKEN_KEY = "loope.token";

export class ApiError extends Error {
  constructor(status, detail, path) {
    super(`${path}: HTTP ${status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    this.status = status;
  }
}

function headers(token, extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function send(method, path, body) {
  const json = body === undefined ? {} : { "Content-Type": "application/json" };
  const request = (token) => fetch(API + path, {
    method, headers: headers(token, json), body: body === undefined ? undefined : JSON.stringify(body),
  });
  const used = localStorage.getItem(TOKEN_KEY);
  let response = await request(used);
  // Another request may have stored a token meanwhile; otherwise ask for one, once.
  if (response.status === 401 && (localStorage.getItem(TOKEN_KEY) !== used || askForToken())) {
    response = await request(localStorage.getItem(TOKEN_KEY));
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data?.detail ?? text, path);
  return data;
}

function askForToken() {
  const token = window.prompt("This server needs an API token (it is kept in this browser):");
  if (!token) return false;
  localStorage.setItem(TOKEN_KEY, token.trim());
  return true;
}

export const get = (path) => send("GET", path);
export const post = (path, body) => send("POST", path, body ?? {});

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, item);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// Every run matching the filters, page by page, up to `maxRuns` (a bound, not a guess).
export async function allRuns(filters = {}, maxRuns = 20000) {
  const runs = [];
  let cursor = 0;
  while (runs.length < maxRuns) {
    const page = await get(`/runs${query({ ...filters, cursor, limit: 1000 })}`);
    runs.push(...page.runs);
    if (page.next_cursor === null || page.next_cursor === undefined) break;
    cursor = page.next_cursor;
  }
  return runs;
}
