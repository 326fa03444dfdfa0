// The /v1 API with the user's bearer token. The token lives in localStorage
// so a reload keeps the user signed in; "Sign out" removes it.

const TOKEN_KEY = "silo.token";

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY),
  set: (value) => localStorage.setItem(TOKEN_KEY, value),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let unauthorized = () => {};

/** Called with the ApiError whenever the API answers 401 (token unknown or revoked). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

async function readError(response) {
  // Every API failure is {"error": {"code", "message", "details"}}; a proxy's
  // error page is not, so fall back to the status line.
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      return new ApiError(response.status, body.error.code, body.error.message);
    }
  } catch {
    /* not JSON */
  }
  return new ApiError(response.status, "http_error", `${response.status} ${response.statusText}`);
}

/**
 * One API call. `params` values may be arrays (repeated query parameters);
 * null, undefined and "" are left out. `as: "blob"` returns the body as a Blob.
 */
export async function api(path, { method = "GET", params = {}, as = "json" } = {}) {
  const bearer = token.get();
  if (!bearer) throw new ApiError(401, "unauthenticated", "enter your API token");
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== null && item !== undefined && item !== "") url.searchParams.append(key, item);
    }
  }
  const headers = { Authorization: `Bearer ${bearer}` };
  const conditional = method === "GET" && as === "json";
  const held = conditional ? heldAnswers.get(url.href) : undefined;
  if (held) headers["If-None-Match"] = held.etag;
  let response;
  try {
    // no-store: the answers held here are the cache; the browser's would hide the 304s.
    response = await fetch(url, { method, headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "unreachable", `the API is not reachable (${err.message})`);
  }
  if (response.status === 304 && held) return held.body;
  if (!response.ok) {
    const error = await readError(response);
    if (response.status === 401) unauthorized(error);
    throw error;
  }
  if (as === "blob") return response.blob();
  const body = await response.json();
  const etag = response.headers.get("ETag");
  if (conditional && etag) hold(url.href, etag, body);
  return body;
}

// The latest answer to each GET with its ETag: the next poll of the same URL
// sends If-None-Match, and a 304 (nothing changed) reuses the answer held.
const heldAnswers = new Map();
const HELD_ANSWERS = 200;

function hold(href, etag, body) {
  heldAnswers.delete(href);
  heldAnswers.set(href, { etag, body });
  if (heldAnswers.size > HELD_ANSWERS) heldAnswers.delete(heldAnswers.keys().next().value);
}

/** Every epoch event of a job after `after`, following the API's pages. */
export async function eventsAfter(jobId, after) {
  const items = [];
  for (;;) {
    const page = await api(`/v1/jobs/${jobId}/events`, { params: { after, limit: 1000 } });
    items.push(...page.items);
    if (page.items.length < 1000) return { items, after: page.next_after };
    after = page.next_after;
  }
}

/** Download an artifact: the route needs the token header, so no plain link. */
export async function downloadArtifact(jobId, name) {
  const path = name.split("/").map(encodeURIComponent).join("/");
  const blob = await api(`/v1/jobs/${jobId}/artifacts/${path}`, { as: "blob" });
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), {
    href: url,
    download: name.split("/").pop(),
  });
  document.body.append(link);
  link.click();
  link.remove();
  // Some browsers read the blob after the click returns: free it a little later.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
