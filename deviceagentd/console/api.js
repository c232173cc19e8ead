// The gateway's public HTTP API, as curl uses it: the same routes, the same bearer token.
// The token lives in sessionStorage only (this tab, until it closes), never in localStorage or a cookie.

const TOKEN_KEY = "deviceagentd.token";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
  // Field errors as {field: reason} (400 answers name each field in details).
  get fields() {
    const out = {};
    if (Array.isArray(this.details)) for (const d of this.details) if (d && d.field) out[d.field] = d.reason;
    return out;
  }
}

let onUnauthorized = () => {};

export const auth = {
  get token() { return sessionStorage.getItem(TOKEN_KEY) || ""; },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  // Called with no arguments when the gateway answers 401; resolves once the user signed in again.
  set handler(fn) { onUnauthorized = fn; },
};

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  if (auth.token) h.Authorization = `Bearer ${auth.token}`;
  return h;
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const e = body && body.error ? body.error : { code: `http_${response.status}`, message: response.statusText };
  return new ApiError(response.status, e.code, e.message || e.code, e.details);
}

// fetch() with the token; a 401 asks the user to sign in and tries once more.
async function send(path, init, retried = false) {
  const response = await fetch(path, { ...init, headers: headers(init.headers) });
  if (response.status === 401 && !retried) {
    await onUnauthorized();
    return send(path, init, true);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function get(path) {
  return (await send(path, { method: "GET" })).json();
}

export async function post(path, body) {
  const init = { method: "POST" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  return (await send(path, init)).json();
}

export async function text(path) {
  return (await send(path, { method: "GET", headers: { Accept: "text/plain" } })).text();
}

export async function del(path) {
  return (await send(path, { method: "DELETE" })).json();
}

// Server-Sent Events over fetch() (EventSource cannot send a token): calls onEvent(name, data, id)
// for each event; resolves when the stream ends, rejects on a network error or an abort.
export async function sse(path, { method = "GET", body, signal, lastEventId, onEvent, onOpen }) {
  const init = { method, signal, headers: { Accept: "text/event-stream" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  if (lastEventId) init.headers["Last-Event-ID"] = String(lastEventId);
  const response = await send(path, init);
  if (onOpen) onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "", data = [], id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let index;
    while ((index = buffer.search(/\r\n|\n|\r/)) >= 0) {
      const line = buffer.slice(0, index);
      buffer = buffer.slice(index + (buffer.startsWith("\r\n", index) ? 2 : 1));
      if (line === "") {
        if (data.length) onEvent(name || "message", JSON.parse(data.join("\n")), id);
        name = ""; data = []; id = null;
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") name = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
    }
  }
}

// Prometheus text → {name: [{labels, value}]} (for the overview's rates and histograms).
export function parseMetrics(textBody) {
  const out = {};
  for (const line of textBody.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)$/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const pair of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    (out[m[1]] = out[m[1]] || []).push({ labels, value: Number(m[4]) });
  }
  return out;
}
