// The API, called by URLs relative to the page (so the base path is kept),
// with the token the user typed (sessionStorage: this tab only).

const TOKEN = "deepaas-token";

/** The server's base path, as a URL (the page's, two levels up: ".../base/"). */
export const ROOT = new URL("../", document.baseURI);

/** What a test (or a curious user) can read: window.dashboard. */
export const state = {
  view: "loading", // list, job, missing
  status: null, // the shown training's status
  eta: null, // and its eta_seconds
  charts: {}, // key -> {points, gaps}
  logBytes: 0,
  draining: false,
  requests: 0,
  shown: 0, // times a training's record was shown (its panel updated)
  listed: 0, // times the list was refreshed
};
window.dashboard = state;

export function token() {
  return sessionStorage.getItem(TOKEN) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN, value);
  else sessionStorage.removeItem(TOKEN);
}

/** An answer that was no 2xx: its status and the server's message. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** fetch() of a path under the base path, with the token. */
export async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const value = token();
  if (value) headers.set("Authorization", "Bearer " + value);
  state.requests += 1;
  return fetch(new URL(path, ROOT), { ...options, headers });
}

/** The JSON of a 2xx answer; else throws an ApiError saying why. */
export async function json(path, options = {}) {
  const response = await call(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, messageOf(response, body), body);
  }
  return body;
}

/** A status that a token (or another one) would answer differently. */
export function isAuth(status) {
  return status === 401 || status === 403;
}

function messageOf(response, body) {
  if (isAuth(response.status)) {
    // said to a browser user, not a curl one (the server's text says "send
    // 'Authorization: Bearer <token>'"): one line, the same for every model
    const why = !token() ? "" : response.status === 403
      ? "This token may not train. " : "This token is not accepted. ";
    return `${why}Type a token with the train scope in the Token field.`;
  }
  if (body && typeof body.message === "string") return body.message;
  if (body && typeof body.error === "string") return body.error;
  if (body && typeof body === "object") return JSON.stringify(body);
  return `${response.status} ${response.statusText}`;
}

/** The path of a model's trainings ("v2/models/m/train/"). */
export function trainPath(model) {
  return `v2/models/${encodeURIComponent(model)}/train/`;
}

/** The path of one training. */
export function jobPath(model, uuid) {
  return trainPath(model) + encodeURIComponent(uuid);
}

export const FINISHED = new Set(["done", "error", "cancelled"]);

/** "1h 02m", "3m 07s", "12s", "0.4s" from seconds. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  if (seconds < 10) return `${Math.max(seconds, 0).toFixed(1)}s`;
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, "0");
  if (h) return `${h}h ${pad(m)}m`;
  if (m) return `${m}m ${pad(s % 60)}s`;
  return `${s}s`;
}

/** How long a training ran (finished: the server's duration) or has been
 * running: this clock minus start_time, the start as an instant in UTC.
 * Not start_date: that is the server's local time without a zone (the
 * DEEPaaS v2 format), which a browser in another time zone reads as its
 * own local time, hours off. */
export function elapsed(record) {
  const result = record.result;
  if (result && typeof result.duration === "string") {
    const parts = result.duration.split(":").map(Number);
    if (parts.length === 3 && parts.every(isFinite)) {
      return duration(parts[0] * 3600 + parts[1] * 60 + parts[2]);
    }
    return result.duration;
  }
  const start = record.start_time ? Date.parse(record.start_time) : NaN;
  if (isNaN(start) || FINISHED.has(record.status)) return "";
  return duration((Date.now() - start) / 1000);
}

/** An element with attributes and children (text is never parsed as HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** The arguments of a record, short: "epochs=3 lr=0.01". */
export function argsText(args) {
  if (!args || typeof args !== "object") return "";
  return Object.entries(args)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
}

/** Show (or clear, with "") the page's error line. */
export function problem(text) {
  const node = document.getElementById("problem");
  node.textContent = text || "";
  node.hidden = !text;
}
