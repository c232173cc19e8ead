// Small DOM helpers and formatters shared by the pages.

// h("td", {class: "x", onclick: fn}, "text", child, ...) → an element. Strings become text nodes
// (never HTML), so whatever a device sends is shown, not run.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
// For the few places that build many rows as one HTML string (the device table): always escape.
export function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

export function value(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// A short state summary: "temperature 28 · mode auto · …".
export function summary(state, limit = 4) {
  const parts = Object.entries(state || {}).slice(0, limit).map(([k, v]) => `${k} ${value(v)}`);
  const more = Object.keys(state || {}).length - limit;
  return parts.join(" · ") + (more > 0 ? ` · +${more}` : "");
}

// Local date and time for an ISO string (the browser's zone; the title keeps the ISO form).
// The formatters are made once: a table of 1,000 devices formats 1,000 times per redraw.
const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });
export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const now = new Date();
  const today = d.getDate() === now.getDate() && d.getMonth() === now.getMonth() && d.getFullYear() === now.getFullYear();
  return (today ? TIME : DATE_TIME).format(d);
}

export function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  if (mm) return `${mm} min ${s % 60} s`;
  return `${s} s`;
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || text}` }, text);
}

export function flash(el) {
  el.classList.remove("flash");
  void el.offsetWidth; // restart the animation
  el.classList.add("flash");
}

export function errorText(error) {
  if (error && error.code) return `${error.message} (${error.code}${error.status ? `, HTTP ${error.status}` : ""})`;
  return String(error && error.message ? error.message : error);
}
