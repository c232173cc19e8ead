// One device: its state (live), a form per command of its DeviceSpec (types, enums, min/max,
// the gateway's validation errors shown next to the field), its events and its command log
// (paged, new ones added live).

import { ApiError, get, post } from "./api.js";
import { badge, errorText, flash, h, replace, time, value } from "./ui.js";

const PAGE = 20;

// What the user typed → the JSON value sent. Anything that does not parse is sent as typed, so
// the gateway (not the page) says what is wrong with it.
function readInput(spec, input) {
  const raw = input.value;
  if (raw.trim() === "") return undefined;
  switch (spec.type) {
    case "int": case "float": {
      const n = Number(raw);
      return raw.trim() !== "" && Number.isFinite(n) ? n : raw;
    }
    case "bool":
      return raw === "true" ? true : raw === "false" ? false : raw;
    case "enum":
      return spec.enum ? spec.enum[Number(raw)] : raw;
    case "object": case "array":
      try { return JSON.parse(raw); } catch { return raw; }
    default:
      return raw;
  }
}

function rangeText(spec) {
  const unit = spec.unit ? ` ${spec.unit}` : "";
  if (spec.min !== undefined && spec.max !== undefined) return `${spec.min} … ${spec.max}${unit}`;
  if (spec.min !== undefined) return `≥ ${spec.min}${unit}`;
  if (spec.max !== undefined) return `≤ ${spec.max}${unit}`;
  return unit.trim();
}

function inputFor(name, spec, id) {
  if (spec.type === "bool") {
    return h("select", { id, name }, h("option", { value: "" }, "—"), h("option", { value: "true" }, "true"),
      h("option", { value: "false" }, "false"));
  }
  if (spec.enum) {
    return h("select", { id, name }, h("option", { value: "" }, "—"),
      spec.enum.map((v, i) => h("option", { value: String(i) }, value(v))));
  }
  if (spec.type === "object" || spec.type === "array") {
    return h("textarea", { id, name, placeholder: spec.type === "object" ? '{"h": 120, "s": 100, "v": 100}' : "[…]" });
  }
  const numeric = spec.type === "int" || spec.type === "float";
  return h("input", { id, name, type: "text", inputmode: numeric ? (spec.type === "int" ? "numeric" : "decimal") : null,
    placeholder: numeric ? rangeText(spec) : "", autocomplete: "off" });
}

function commandForm(device, name, command, onSent) {
  const params = Object.entries(command.parameters || {});
  const fields = new Map();
  const formError = h("div", { class: "field-error", role: "alert" });
  const result = h("div", { class: "result", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary" }, "Send");
  const form = h("form", { class: "command", novalidate: true, dataset: { command: name } },
    h("h3", { class: "mono" }, name),
    command.description ? h("div", { class: "hint" }, command.description) : null,
    params.map(([pname, spec]) => {
      const id = `param-${name}-${pname}`;
      const input = inputFor(pname, spec, id);
      const error = h("div", { class: "field-error", id: `${id}-error`, role: "alert" });
      fields.set(pname, { spec, input, error });
      input.setAttribute("aria-describedby", `${id}-error`);
      return h("div", { class: "field" },
        h("label", { for: id }, h("span", { class: "mono" }, pname), spec.required ? " *" : "",
          h("span", { class: "hint" }, ` ${spec.type}${rangeText(spec) ? `, ${rangeText(spec)}` : ""}`)),
        input, spec.description ? h("div", { class: "hint" }, spec.description) : null, error);
    }),
    formError, button, result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { command: name, params: {} };
    for (const [pname, f] of fields) {
      f.error.textContent = "";
      const v = readInput(f.spec, f.input);
      if (v !== undefined) body.params[pname] = v;
    }
    formError.textContent = "";
    replace(result, h("span", { class: "muted" }, "sending…"));
    button.disabled = true;
    try {
      const answer = await post(`/api/devices/${encodeURIComponent(device)}/commands`, body);
      replace(result, badge(answer.ok ? "ok" : `code ${answer.code}`, answer.ok ? "ok" : "bad"), ` ${answer.msg || ""}`,
        h("span", { class: "muted" }, ` · ${answer.latencyMs} ms · ${answer.requestId}`),
        answer.data !== null && answer.data !== undefined ? h("div", { class: "mono" }, value(answer.data)) : null);
      onSent();
    } catch (error) {
      replace(result);
      if (error instanceof ApiError && error.status === 400 && Object.keys(error.fields).length) {
        for (const [field, reason] of Object.entries(error.fields)) {
          const f = fields.get(field.replace(/^params\./, ""));
          if (f) f.error.textContent = `${field.replace(/^params\./, "")} ${reason}`;
          else formError.textContent += `${field} ${reason}. `;
        }
      } else {
        formError.textContent = errorText(error);
      }
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

// A paged table, newest first: load() appends older pages, prepend() adds live rows on top.
function pagedTable(headers, rowOf, keyOf, fetchPage) {
  const tbody = h("tbody");
  const more = h("button", { type: "button" }, "Older");
  const status = h("span", { class: "muted" });
  const keys = new Set();
  let cursor = null;
  let done = false;
  const table = h("div", {}, h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))), tbody),
    h("div", { class: "pager" }, more, status));

  function empty() {
    if (!tbody.rows.length) tbody.append(h("tr", { class: "none" }, h("td", { colspan: headers.length, class: "empty" }, "None yet.")));
  }
  async function load() {
    more.disabled = true;
    try {
      const page = await fetchPage(cursor);
      for (const item of page.items) {
        const key = keyOf(item);
        if (keys.has(key)) continue;
        keys.add(key);
        tbody.append(rowOf(item));
      }
      cursor = page.next;
      done = !cursor;
      status.textContent = done ? "that is all" : "";
      for (const none of tbody.querySelectorAll("tr.none")) if (tbody.rows.length > 1) none.remove();
      empty();
    } catch (error) {
      status.textContent = errorText(error);
    }
    more.disabled = done;
  }
  function prepend(item) {
    const key = keyOf(item);
    const row = rowOf(item);
    const existing = tbody.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
    if (existing) existing.replaceWith(row);
    else {
      for (const none of tbody.querySelectorAll("tr.none")) none.remove();
      tbody.prepend(row);
    }
    keys.add(key);
    flash(row);
  }
  function reset() {
    tbody.replaceChildren();
    keys.clear();
    cursor = null;
    return load();
  }
  more.addEventListener("click", load);
  return { el: table, load, prepend, reset };
}

function eventRow(e) {
  return h("tr", { dataset: { key: String(e.id) } },
    h("td", { title: e.ts }, time(e.ts)), h("td", { class: "mono" }, e.event),
    h("td", {}, badge(e.level, e.level === "info" ? "" : e.level)),
    h("td", { class: "mono" }, value(e.data)), h("td", { class: "muted" }, e.source || ""));
}

// Who sent a command, from its `origin` (none: a single command through the HTTP API).
const CHANNELS = { agent: "agent", mcp: "MCP", schedule: "schedule", voiceplatform: "voice platform",
  uplink: "cloud", http: "API" };

function originText(origin) {
  if (!origin) return "API";
  const who = origin.speaker || origin.client || origin.voiceId || "";
  const scene = origin.sceneId ? `scene ${origin.sceneId.replace(/^SCENE#/, "")}` : "";
  return [CHANNELS[origin.channel] || origin.channel, who, scene].filter(Boolean).join(" · ");
}

function commandRow(c) {
  const outcome = c.status === "ok" ? "ok" : ["pending"].includes(c.status) ? "" : "bad";
  const origin = c.origin || {};
  return h("tr", { dataset: { key: c.requestId } },
    h("td", { title: c.sentAt }, time(c.sentAt)), h("td", { class: "mono" }, c.command),
    h("td", { class: "mono" }, value(c.params)),
    h("td", {}, badge(c.status + (c.late ? " (late)" : ""), outcome)),
    h("td", {}, c.code === null ? "" : `${c.code} ${c.msg || ""}`),
    h("td", { class: "origin", title: origin.sessionId || origin.scheduleId || origin.messageId || "" },
      originText(c.origin)),
    h("td", { class: "mono muted" }, c.requestId));
}

export async function render(main, site, deviceId) {
  const path = `/api/devices/${encodeURIComponent(deviceId)}`;
  let device;
  try {
    device = await get(path);
  } catch (error) {
    replace(main, h("h1", {}, deviceId), h("div", { class: "notice bad" }, errorText(error)));
    return null;
  }
  const product = site.products.get(device.productId);
  let spec = { telemetry: {}, commands: {} };
  try {
    spec = await site.spec(device.productId);
  } catch { /* a product no longer configured: its device is shown without spec */ }
  const status = h("span", { id: "device-status" });
  const lastSeen = h("dd", { id: "device-last-seen" });
  const stateBody = h("tbody", { id: "state-rows" });
  const cells = new Map();

  function drawHeader() {
    replace(status, badge(device.status));
    lastSeen.textContent = time(device.lastSeen);
    lastSeen.title = device.lastSeen;
  }
  function stateCell(name) {
    if (!cells.has(name)) {
      const fieldSpec = spec.telemetry[name] || {};
      const cell = h("td", { class: "mono", dataset: { field: name } });
      cells.set(name, cell);
      stateBody.append(h("tr", {}, h("td", { class: "mono" }, name), cell,
        h("td", { class: "muted" }, fieldSpec.unit || ""),
        h("td", { class: "muted" }, fieldSpec.description || "(not in the product's spec)")));
    }
    return cells.get(name);
  }
  function drawState(changed) {
    for (const name of Object.keys(spec.telemetry)) stateCell(name);
    for (const [name, v] of Object.entries(changed)) {
      const cell = stateCell(name);
      cell.textContent = value(v);
      if (changed !== device.state) flash(cell.parentElement);
    }
    for (const name of Object.keys(spec.telemetry)) if (!(name in device.state)) stateCell(name).textContent = "—";
  }

  const events = pagedTable(["Time", "Event", "Level", "Data", "Source"], eventRow, (e) => String(e.id), async (before) => {
    const page = await get(`${path}/events?limit=${PAGE}${before ? `&before=${before}` : ""}`);
    return { items: page.events, next: page.nextBefore };
  });
  const commands = pagedTable(["Sent", "Command", "Params", "Status", "Answer", "From", "Request id"], commandRow,
    (c) => c.requestId, async (before) => {
      const page = await get(`${path}/commands?limit=${PAGE}${before ? `&before=${encodeURIComponent(before)}` : ""}`);
      return { items: page.commands, next: page.nextBefore };
    });
  events.el.id = "events";
  commands.el.id = "command-log";

  const forms = Object.entries(spec.commands).map(([name, command]) => commandForm(deviceId, name, command, () => {}));
  replace(main,
    h("h1", {}, h("span", { class: "mono" }, deviceId), " ", status),
    h("div", { class: "card" }, h("dl", { class: "kv" },
      h("dt", {}, "Product"), h("dd", {}, product ? `${product.name} (${device.productId})` : device.productId),
      h("dt", {}, "Last seen"), lastSeen,
      h("dt", {}, "First seen"), h("dd", { title: device.firstSeen }, time(device.firstSeen)),
      h("dt", {}, "Metadata"), h("dd", { class: "mono" }, value(device.metadata)))),
    h("div", { class: "card" }, h("h2", {}, "State"),
      h("table", { id: "state" }, h("thead", {}, h("tr", {}, ["Field", "Value", "Unit", "Description"].map((t) => h("th", {}, t)))),
        stateBody)),
    h("div", { class: "card" }, h("h2", {}, "Commands"),
      forms.length ? h("div", { class: "commands" }, forms) : h("p", { class: "empty" }, "This product takes no commands.")),
    h("div", { class: "two" },
      h("div", { class: "card" }, h("h2", {}, "Events"), events.el),
      h("div", { class: "card" }, h("h2", {}, "Command log"), commands.el)));
  drawHeader();
  drawState(device.state);

  const off = site.live.on((name, data) => {
    if (data.deviceId !== deviceId) return;
    if (name === "state") {
      Object.assign(device.state, data.state);
      device.lastSeen = data.ts;
      drawState(data.state);
      drawHeader();
    } else if (name === "lifecycle") {
      device.status = data.status;
      device.online = data.status === "online";
      drawHeader();
      events.prepend({ id: data.eventId, event: data.status, level: "info", data: { reason: data.reason },
        ts: data.ts, source: "gateway" });
    } else if (name === "event") {
      events.prepend(data);
    } else if (name === "command") {
      commands.prepend(data);
    }
  });
  const offResync = site.live.onResync(async () => {
    try {
      device = await get(path);
      drawHeader();
      drawState(device.state);
    } catch { /* shown at the next change */ }
    events.reset();
    commands.reset();
  });
  await Promise.all([events.load(), commands.load()]);
  return { close() { off(); offResync(); } };
}
