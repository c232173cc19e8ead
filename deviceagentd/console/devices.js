// Devices: every device in one live table (GET /api/devices, page by page), filtered by product,
// status and id here in the page; state and online/offline changes from the live stream are
// applied once per animation frame, so 100 changes a second cost a few cell updates each frame.

import { get } from "./api.js";
import { esc, h, replace, summary, time } from "./ui.js";

export async function loadAllDevices() {
  const devices = [];
  let after = null;
  do {
    const page = await get(`/api/devices?limit=1000${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    devices.push(...page.devices);
    after = page.nextAfter;
  } while (after);
  return devices;
}

function rowHtml(d, productName) {
  const id = esc(d.deviceId);
  return `<tr data-id="${id}"><td><span class="badge ${d.online ? "online" : "offline"}">${d.status}</span></td>` +
    `<td><a href="#/devices/${esc(encodeURIComponent(d.deviceId))}" class="mono">${id}</a></td>` +
    `<td>${esc(productName)}</td><td class="state">${esc(summary(d.state))}</td>` +
    `<td title="${esc(d.lastSeen)}">${esc(time(d.lastSeen))}</td></tr>`;
}

export async function render(main, site, query) {
  const productSelect = h("select", { id: "filter-product", "aria-label": "Product" },
    h("option", { value: "" }, "All products"),
    [...site.products.values()].map((p) => h("option", { value: p.productId }, p.name)));
  const statusSelect = h("select", { id: "filter-status", "aria-label": "Status" },
    h("option", { value: "" }, "Online and offline"), h("option", { value: "online" }, "Online"),
    h("option", { value: "offline" }, "Offline"));
  const search = h("input", { id: "filter-search", type: "search", placeholder: "Search by id", "aria-label": "Search by id" });
  const count = h("span", { class: "muted", id: "device-count" });
  const tbody = h("tbody", { id: "device-rows" });
  replace(main, h("h1", {}, "Devices"),
    h("div", { class: "toolbar" }, productSelect, statusSelect, search, count),
    h("div", { class: "card" }, h("table", { id: "devices" },
      h("thead", {}, h("tr", {}, ["Status", "Device", "Product", "State", "Last seen"].map((t) => h("th", {}, t)))),
      tbody)));
  productSelect.value = (query && query.get("productId")) || "";
  statusSelect.value = (query && query.get("status")) || "";
  search.value = (query && query.get("q")) || "";

  const devices = new Map();
  const rows = new Map();
  const dirty = new Set();
  const empty = h("tr", { hidden: true }, h("td", { colspan: 5, class: "empty" }, "No devices match."));
  let frame = 0;
  let closed = false;

  function matches(d) {
    const q = search.value.trim().toLowerCase();
    return (!productSelect.value || d.productId === productSelect.value)
      && (!statusSelect.value || d.status === statusSelect.value)
      && (!q || d.deviceId.toLowerCase().includes(q)
        || (typeof d.metadata.name === "string" && d.metadata.name.toLowerCase().includes(q)));
  }

  // Every device gets its row once, sorted by id; filters only hide rows, so typing in the
  // search box does not rebuild a table of 1,000 rows.
  function build() {
    const sorted = [...devices.values()].sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1));
    tbody.innerHTML = sorted.map((d) => rowHtml(d, site.productName(d.productId))).join("");
    rows.clear();
    for (const tr of tbody.rows) rows.set(tr.dataset.id, tr);
    tbody.append(empty);
    filter();
  }

  function filter() {
    let shown = 0;
    for (const [id, tr] of rows) {
      const visible = matches(devices.get(id));
      if (tr.hidden === visible) tr.hidden = !visible;
      shown += visible;
    }
    empty.hidden = shown > 0;
    count.textContent = `${shown} of ${devices.size} devices`;
    const params = new URLSearchParams();
    if (productSelect.value) params.set("productId", productSelect.value);
    if (statusSelect.value) params.set("status", statusSelect.value);
    if (search.value.trim()) params.set("q", search.value.trim());
    const query = params.toString();
    history.replaceState(null, "", `#/devices${query ? `?${query}` : ""}`);
  }

  // Changed rows only, once per frame.
  function flush() {
    frame = 0;
    let refilter = false;
    for (const id of dirty) {
      const d = devices.get(id);
      const tr = rows.get(id);
      if (!d || !tr) continue;
      const cells = tr.cells;
      cells[0].firstChild.className = `badge ${d.online ? "online" : "offline"}`;
      cells[0].firstChild.textContent = d.status;
      cells[3].textContent = summary(d.state);
      cells[4].textContent = time(d.lastSeen);
      cells[4].title = d.lastSeen;
      refilter ||= tr.hidden === matches(d);
    }
    dirty.clear();
    if (refilter) filter();
  }

  function changed(id) {
    dirty.add(id);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  async function fetchOne(id) {
    try {
      const d = await get(`/api/devices/${encodeURIComponent(id)}`);
      if (closed || devices.has(d.deviceId)) return;
      devices.set(d.deviceId, d);
      build(); // a new device is rare: its row goes in its place
    } catch { /* gone again */ }
  }

  async function reload() {
    const all = await loadAllDevices();
    if (closed) return;
    devices.clear();
    for (const d of all) devices.set(d.deviceId, d);
    build();
  }

  const off = site.live.on((name, data) => {
    if (name !== "state" && name !== "lifecycle") return;
    const d = devices.get(data.deviceId);
    if (!d) {
      fetchOne(data.deviceId); // a new device registered
      return;
    }
    if (name === "state") Object.assign(d.state, data.state);
    else {
      d.online = data.status === "online";
      d.status = data.status;
    }
    if (d.online) d.lastSeen = data.ts; // going offline by silence is not being seen
    changed(d.deviceId);
  });
  const offResync = site.live.onResync(reload);
  for (const input of [productSelect, statusSelect]) input.addEventListener("change", filter);
  search.addEventListener("input", filter);
  await reload();
  return {
    close() {
      closed = true;
      off();
      offResync();
      if (frame) cancelAnimationFrame(frame);
    },
  };
}
