// One /api/stream for the whole page: every change goes to the open page's handler. After a
// reconnect (with Last-Event-ID: stored events are replayed, none twice) or a `missed` notice,
// the page re-reads what it shows, since state changes are not replayed.

import { sse } from "./api.js";

export class LiveStream {
  constructor(statusEl) {
    this.statusEl = statusEl;
    this.listeners = new Set();
    this.resyncers = new Set();
    this.lastEventId = null;
    this.connected = false;
    this.everConnected = false;
    this.controller = null;
    this.stopped = false;
    this.running = false;
  }

  on(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }
  onResync(fn) { this.resyncers.add(fn); return () => this.resyncers.delete(fn); }

  start() {
    this.stopped = false;
    if (!this.running) this.loop();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  status(text, on) {
    this.statusEl.textContent = text;
    this.statusEl.className = `live ${on ? "on" : "off"}`;
  }

  async loop() {
    this.running = true;
    try {
      await this.connectLoop();
    } finally {
      this.running = false;
    }
  }

  async connectLoop() {
    let delay = 1000;
    while (!this.stopped) {
      this.controller = new AbortController();
      try {
        await sse("/api/stream", {
          signal: this.controller.signal,
          lastEventId: this.lastEventId,
          onEvent: (name, data, id) => this.dispatch(name, data, id),
        });
        this.status("reconnecting…", false);
      } catch (error) {
        if (this.stopped) return;
        this.status(`offline: ${error.message || error}`, false);
      }
      // Back off while the gateway is unreachable; start over quickly after a stream that worked.
      delay = this.connected ? 1000 : Math.min(delay * 2, 15000);
      this.connected = false;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  dispatch(name, data, id) {
    if (id) this.lastEventId = id;
    if (name === "ready") {
      const again = this.everConnected;
      this.connected = this.everConnected = true;
      this.status("live", true);
      if (again) this.resync();
      return;
    }
    if (name === "missed") {
      this.resync();
      return;
    }
    for (const fn of this.listeners) fn(name, data);
  }

  resync() {
    for (const fn of this.resyncers) fn();
  }
}
