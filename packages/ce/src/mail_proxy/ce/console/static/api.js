// The REST API with the token typed at sign-in. The token lives in this tab's
// sessionStorage only (gone when the tab closes; never a cookie, so no CSRF surface) and is
// sent as X-API-Token. The console has no authority of its own: the API decides.

const KEY = "gmp-console-token";

export class ApiError extends Error {
  constructor(status, code, message, data) {
    super(message);
    this.status = status;
    this.code = code;
    this.data = data;
  }
}

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

/** Listeners told when the API refuses the token (401): the app signs out. */
const refusedListeners = [];
export function onRefused(fn) {
  refusedListeners.push(fn);
}

/**
 * call("GET", "/messages", {query: {status: "sent"}}) → the JSON answer (ok: true), or throws
 * ApiError with the API's status, code and message.
 */
export async function call(method, path, { query, body, tokenValue } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
  }
  const headers = { "X-API-Token": tokenValue ?? token.get() ?? "" };
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, "network_error", `the server did not answer (${err.message})`);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    throw new ApiError(resp.status, "bad_answer", `unexpected answer (HTTP ${resp.status})`);
  }
  if (!resp.ok || !data || data.ok === false) {
    const err = new ApiError(
      resp.status,
      (data && data.code) || "http_error",
      (data && data.error) || `HTTP ${resp.status}`,
      data,
    );
    if (resp.status === 401 && tokenValue === undefined) refusedListeners.forEach((fn) => fn(err));
    throw err;
  }
  return data;
}

export const get = (path, query) => call("GET", path, { query });
export const post = (path, body, query) => call("POST", path, { body: body ?? {}, query });
export const put = (path, body, query) => call("PUT", path, { body: body ?? {}, query });
export const del = (path, query) => call("DELETE", path, { query });

/** A path segment, encoded (ids may contain "/", "?", "#"). */
export const seg = (value) => encodeURIComponent(value);
