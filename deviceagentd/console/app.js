// The console: hash routes (#/overview, #/devices, #/devices/<id>, #/chat, #/voice,
// #/voice-platform), sign-in when the gateway asks for a token, one live stream for all pages.

import { auth, get } from "./api.js";
import { LiveStream } from "./live.js";
import { h, replace, errorText } from "./ui.js";

const PAGES = {
  overview: () => import("./overview.js"),
  devices: () => import("./devices.js"),
  device: () => import("./device.js"),
  chat: () => import("./chat.js"),
  voice: () => import("./voice.js"),
  "voice-platform": () => import("./voiceplatform.js"),
};

// What every page may need, read once: the products, the gateway's facts; a product's DeviceSpec
// when a page asks for it.
export class Site {
  constructor(live) {
    this.live = live;
    this.products = new Map();
    this.gateway = null;
    this.specs = new Map();
  }

  async load() {
    const [gateway, list] = await Promise.all([get("/api/gateway"), get("/api/products")]);
    this.gateway = gateway;
    for (const p of list.products) this.products.set(p.productId, p);
  }

  spec(productId) {
    if (!this.specs.has(productId)) {
      const loading = get(`/api/products/${encodeURIComponent(productId)}`);
      loading.catch(() => this.specs.delete(productId));
      this.specs.set(productId, loading);
    }
    return this.specs.get(productId);
  }

  productName(productId) {
    const product = this.products.get(productId);
    return product ? product.name : productId;
  }
}

const main = document.getElementById("main");
const dialog = document.getElementById("sign-in");
const live = new LiveStream(document.getElementById("live"));
const site = new Site(live);
let current = null;
let signingIn = null;

// A 401 anywhere opens the sign-in dialog; every waiting call goes on once a token is entered.
auth.handler = () => {
  if (!signingIn) {
    signingIn = new Promise((resolve) => {
      const form = document.getElementById("sign-in-form");
      const input = document.getElementById("token");
      const error = document.getElementById("sign-in-error");
      error.textContent = auth.token ? "That token was not accepted." : "";
      auth.token = "";
      input.value = "";
      form.onsubmit = async (event) => {
        event.preventDefault();
        auth.token = input.value.trim();
        try {
          const response = await fetch("/api/gateway", { headers: { Authorization: `Bearer ${auth.token}` } });
          if (response.status === 401) throw new Error("That token was not accepted.");
        } catch (e) {
          auth.token = "";
          error.textContent = e.message;
          return;
        }
        dialog.close();
        document.getElementById("sign-out").hidden = false;
        signingIn = null;
        resolve();
      };
      if (!dialog.open) dialog.showModal();
      input.focus();
    });
  }
  return signingIn;
};
dialog.addEventListener("cancel", (event) => event.preventDefault());

document.getElementById("sign-out").addEventListener("click", () => {
  auth.token = "";
  location.reload();
});

// "#/devices/light-101" → the device page; "#/devices?productId=light" → the list, filtered.
function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = (path || "overview").split("/");
  if (parts[0] === "devices" && parts[1]) return { page: "device", arg: decodeURIComponent(parts.slice(1).join("/")) };
  const page = PAGES[parts[0]] ? parts[0] : "overview";
  return { page, arg: new URLSearchParams(query || "") };
}

let siteLoaded = null;

async function show() {
  const { page, arg } = route();
  if (current && current.close) current.close();
  current = null;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("current", a.dataset.page === page || (page === "device" && a.dataset.page === "devices"));
  }
  replace(main, h("p", { class: "muted" }, "Loading…"));
  try {
    // The page's module comes while the gateway's facts are read.
    const [module] = await Promise.all([PAGES[page](), siteLoaded]);
    const view = await module.render(main, site, arg);
    if (route().page !== page) { if (view && view.close) view.close(); return; }
    current = view;
  } catch (error) {
    replace(main, h("div", { class: "notice bad" }, `This page could not load: ${errorText(error)}`));
  }
}

async function start() {
  siteLoaded = site.load();
  siteLoaded.then(() => {
    document.getElementById("sign-out").hidden = !auth.token;
    live.start();
  }, () => { /* show() says why the page could not load */ });
  window.addEventListener("hashchange", show);
  // A page left (or frozen in the back/forward cache) must let go of its stream: browsers give a
  // site only six connections, and a stream holds one for as long as it is open.
  window.addEventListener("pagehide", () => live.stop());
  window.addEventListener("pageshow", (event) => { if (event.persisted) live.start(); });
  await show();
}

start();
