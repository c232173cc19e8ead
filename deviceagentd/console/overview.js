// Overview: health, broker, devices online/total per product, message and event rates, NTP
// turnaround, voice sessions, version and uptime. From /api/health, /api/gateway,
// /api/devices (counts) and /metrics, re-read every 5 s; rates are the change between reads.

import { get, parseMetrics, text } from "./api.js";
import { badge, duration, errorText, h, replace } from "./ui.js";

const EVERY_MS = 5000;

function sum(series, filter = () => true) {
  return (series || []).filter((s) => filter(s.labels)).reduce((total, s) => total + s.value, 0);
}

// A quantile from Prometheus histogram buckets (the upper bound of the bucket it falls in).
function quantile(metrics, name, q) {
  const buckets = (metrics[`${name}_bucket`] || []).map((s) => ({ le: Number(s.labels.le), n: s.value }));
  const count = sum(metrics[`${name}_count`]);
  if (!count) return null;
  buckets.sort((a, b) => a.le - b.le);
  const found = buckets.find((b) => b.n >= q * count);
  return found ? found.le : null;
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (!Number.isFinite(seconds)) return "above the largest bucket";
  return seconds < 0.001 ? `${(seconds * 1000).toFixed(2)} ms` : `${(seconds * 1000).toFixed(1)} ms`;
}

function perSecond(now, before, seconds) {
  if (before === null || seconds <= 0) return "—";
  return `${Math.max(0, (now - before) / seconds).toFixed(1)} /s`;
}

export async function render(main, site) {
  const cards = h("div", { class: "grid" });
  const products = h("tbody");
  const problem = h("div");
  replace(main, h("h1", {}, "Overview"), problem, cards,
    h("div", { class: "card" }, h("h2", {}, "Devices per product"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Product"), h("th", {}, "Online"), h("th", {}, "Total"),
        h("th", {}, "Description"))), products)));
  let previous = null;
  let timer = null;
  let closed = false;

  async function refresh() {
    let health, metricsText, counts;
    try {
      [health, metricsText, counts] = await Promise.all([
        fetch("/api/health").then((r) => r.json()),
        text("/metrics"),
        Promise.all([...site.products.keys()].map((id) => Promise.all([
          get(`/api/devices?productId=${encodeURIComponent(id)}&limit=1`),
          get(`/api/devices?productId=${encodeURIComponent(id)}&status=online&limit=1`),
        ]))),
      ]);
    } catch (error) {
      replace(problem, h("div", { class: "notice bad" }, `Could not read the gateway: ${errorText(error)}`));
      return;
    }
    if (closed) return;
    replace(problem);
    const metrics = parseMetrics(metricsText);
    const now = performance.now() / 1000;
    const messages = sum(metrics.deviceagentd_mqtt_messages_in_total);
    const events = sum(metrics.deviceagentd_mqtt_messages_in_total, (l) => l.kind === "event");
    const commands = sum(metrics.deviceagentd_commands_total);
    const seconds = previous ? now - previous.at : 0;
    const mqtt = health.mqtt || {};
    const gateway = site.gateway;
    const ntpCount = sum(metrics.deviceagentd_ntp_turnaround_seconds_count);
    replace(cards,
      h("div", { class: "card" }, h("h2", {}, "Health"),
        h("div", { class: "big" }, badge(health.status, health.status === "ok" ? "ok" : "bad")),
        h("dl", { class: "kv" },
          h("dt", {}, "Storage"), h("dd", {}, health.storage && health.storage.healthy ? "healthy" : "failing"),
          h("dt", {}, "Version"), h("dd", {}, health.version),
          h("dt", {}, "Uptime"), h("dd", {}, duration(health.uptimeS)),
          h("dt", {}, "Time zone"), h("dd", {}, gateway.site ? gateway.site.timezone : "—"))),
      h("div", { class: "card" }, h("h2", {}, "Broker"),
        h("div", { class: "big" }, badge(mqtt.connected ? "connected" : mqtt.state || "down",
          mqtt.connected ? "ok" : "bad")),
        h("dl", { class: "kv" },
          h("dt", {}, "URL"), h("dd", { class: "mono" }, mqtt.url || "—"),
          h("dt", {}, "Connects"), h("dd", {}, mqtt.connects ?? "—"),
          mqtt.lastError ? [h("dt", {}, "Last error"), h("dd", { class: "error" }, mqtt.lastError)] : null)),
      h("div", { class: "card" }, h("h2", {}, "Devices"),
        h("div", { class: "big" }, `${health.devices.online} / ${health.devices.total}`),
        h("div", { class: "muted" }, "online / registered")),
      h("div", { class: "card" }, h("h2", {}, "Traffic"),
        h("dl", { class: "kv" },
          h("dt", {}, "Messages in"), h("dd", { id: "rate-messages" }, perSecond(messages, previous && previous.messages, seconds)),
          h("dt", {}, "Events"), h("dd", { id: "rate-events" }, perSecond(events, previous && previous.events, seconds)),
          h("dt", {}, "Commands"), h("dd", {}, perSecond(commands, previous && previous.commands, seconds)),
          h("dt", {}, "Totals"), h("dd", { class: "muted" }, `${messages} messages, ${events} events, ${commands} commands`))),
      h("div", { class: "card" }, h("h2", {}, "Time sync (NTP)"),
        h("dl", { class: "kv" },
          h("dt", {}, "Answered"), h("dd", {}, String(ntpCount)),
          h("dt", {}, "Turnaround p50"), h("dd", {}, ms(quantile(metrics, "deviceagentd_ntp_turnaround_seconds", 0.5))),
          h("dt", {}, "Turnaround p99"), h("dd", {}, ms(quantile(metrics, "deviceagentd_ntp_turnaround_seconds", 0.99))),
          h("dt", {}, "Loop lag p99"), h("dd", {}, ms(quantile(metrics, "deviceagentd_event_loop_lag_seconds", 0.99))))),
      h("div", { class: "card" }, h("h2", {}, "Voice"),
        h("dl", { class: "kv" },
          h("dt", {}, "Sessions open"), h("dd", {}, String(sum(metrics.deviceagentd_voice_sessions))),
          h("dt", {}, "Voice port"), h("dd", {}, `${gateway.voice.port}${gateway.voice.tls ? " (TLS)" : ""}`),
          h("dt", {}, "Agent"), h("dd", {}, gateway.agent.provider),
          h("dt", {}, "Voice platform"), h("dd", {}, gateway.voicePlatform.enabled ? "on" : "off"))));
    replace(products, [...site.products.values()].map((p, i) => h("tr", {},
      h("td", {}, h("a", { href: `#/devices?productId=${encodeURIComponent(p.productId)}` }, p.name),
        h("div", { class: "muted mono" }, p.productId)),
      h("td", {}, String(counts[i][1].total)), h("td", {}, String(counts[i][0].total)),
      h("td", { class: "muted" }, p.description || ""))));
    previous = { at: now, messages, events, commands, first: previous === null };
  }

  // The first rates after a second, then every few seconds.
  async function loop() {
    await refresh();
    if (!closed) timer = setTimeout(loop, previous && previous.first ? 1000 : EVERY_MS);
    if (previous) previous.first = false;
  }
  await loop();
  return { close() { closed = true; clearTimeout(timer); } };
}
