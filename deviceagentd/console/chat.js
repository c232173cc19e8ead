// Chat with the gateway's agent: POST /api/chat (Server-Sent Events), the reply as it streams,
// each tool call with its arguments and result; history, interrupt and clear by the session routes.

import { ApiError, del, get, post, sse } from "./api.js";
import { errorText, h, replace } from "./ui.js";

const SESSION_KEY = "deviceagentd.chatSession";
const USED_KEY = "deviceagentd.chatSessionUsed";

function toolBox(call) {
  const result = h("pre", {}, "running…");
  const box = h("details", { class: "tool", dataset: { tool: call.name } },
    h("summary", {}, `tool ${call.name}`), h("pre", {}, JSON.stringify(call.arguments, null, 1)), result);
  return { box, result };
}

export async function render(main, site) {
  let session = sessionStorage.getItem(SESSION_KEY) || `console-${Math.random().toString(36).slice(2, 10)}`;
  sessionStorage.setItem(SESSION_KEY, session);
  const log = h("div", { class: "chat-log", id: "chat-log", "aria-live": "polite" });
  const input = h("input", { id: "chat-input", type: "text", placeholder: "Ask about the site, or tell a device what to do",
    autocomplete: "off", class: "grow" });
  const send = h("button", { type: "submit", class: "primary", id: "chat-send" }, "Send");
  const stop = h("button", { type: "button", id: "chat-stop", disabled: true }, "Stop");
  const clear = h("button", { type: "button" }, "New conversation");
  const deviceSelect = h("select", { id: "chat-device", "aria-label": "Device the conversation is about" },
    h("option", { value: "" }, "No device"));
  const sessionLabel = h("span", { class: "muted mono" });
  let running = null;

  async function loadDevices() {
    try {
      const page = await get("/api/devices?limit=1000");
      deviceSelect.append(...page.devices.map((d) => h("option", { value: d.deviceId }, `${d.deviceId} (${site.productName(d.productId)})`)));
    } catch { /* the chat works without */ }
  }

  function bubble(role, text) {
    const el = h("div", { class: `bubble ${role}` }, text);
    log.append(el);
    log.scrollTop = log.scrollHeight;
    return el;
  }

  async function history() {
    replace(log);
    sessionLabel.textContent = `session ${session}`;
    if (sessionStorage.getItem(USED_KEY) !== session) return; // a new conversation has none yet
    try {
      const { messages } = await get(`/api/sessions/${encodeURIComponent(session)}/history`);
      for (const m of messages) {
        const el = bubble(m.role, m.text);
        for (const call of m.toolCalls || []) {
          const { box, result } = toolBox(call);
          const done = (m.toolResults || []).find((r) => r.id === call.id);
          result.textContent = done ? JSON.stringify(done.ok ? done.result : done.error, null, 1) : "";
          el.append(box);
        }
      }
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) bubble("error", errorText(error));
    }
  }

  async function ask(message) {
    sessionStorage.setItem(USED_KEY, session);
    bubble("user", message);
    const reply = bubble("assistant", "");
    const text = h("span", {});
    reply.append(text);
    const boxes = new Map();
    const controller = new AbortController();
    running = controller;
    send.disabled = true;
    stop.disabled = false;
    const body = { message, stream: true, sessionId: session };
    if (deviceSelect.value) body.metadata = { deviceId: deviceSelect.value };
    try {
      await sse("/api/chat", {
        method: "POST", body, signal: controller.signal,
        onEvent(name, data) {
          if (name === "delta") text.textContent += data.textChunk;
          else if (name === "tool_call") {
            const box = toolBox(data);
            boxes.set(data.id, box);
            reply.insertBefore(box.box, text);
          } else if (name === "tool_result") {
            const box = boxes.get(data.id);
            if (box) box.result.textContent = JSON.stringify(data.ok ? data.result : { error: data.error }, null, 1);
          } else if (name === "done") {
            text.textContent = data.text + (data.interrupted ? " (stopped)" : "");
          } else if (name === "error") {
            reply.classList.add("error");
            text.textContent += ` ${data.message} (${data.code})`;
          }
          log.scrollTop = log.scrollHeight;
        },
      });
    } catch (error) {
      if (error.name !== "AbortError") {
        reply.classList.add("error");
        text.textContent = errorText(error);
      }
    } finally {
      running = null;
      send.disabled = false;
      stop.disabled = true;
    }
  }

  const form = h("form", { class: "toolbar", id: "chat-form" }, input, deviceSelect, send, stop, clear);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const message = input.value.trim();
    if (!message || running) return;
    input.value = "";
    ask(message);
  });
  stop.addEventListener("click", () => {
    post(`/api/sessions/${encodeURIComponent(session)}/interrupt`).catch(() => running && running.abort());
  });
  clear.addEventListener("click", async () => {
    try { await del(`/api/sessions/${encodeURIComponent(session)}`); } catch { /* never used */ }
    session = `console-${Math.random().toString(36).slice(2, 10)}`;
    sessionStorage.setItem(SESSION_KEY, session);
    history();
  });
  replace(main, h("h1", {}, "Chat with the agent"),
    h("p", { class: "muted" }, `Agent: ${site.gateway.agent.provider}. `, "Try “what can you do”, “which devices are online”, “你好”.",
      " ", sessionLabel),
    h("div", { class: "card" }, log), form);
  await Promise.all([history(), loadDevices()]);
  input.focus();
  return { close() { if (running) running.abort(); } };
}
