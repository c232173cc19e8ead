// Voice test: the browser's microphone to the voice port's /ws/voice (protocol 1: JSON text
// messages, binary 16 kHz PCM), the recognised text and the reply shown, the spoken reply played.
// Browsers give a page the microphone only in a secure context (https, or localhost); the page
// says so, and what to do, instead of failing silently.

import { auth } from "./api.js";
import { h, replace } from "./ui.js";

const SESSION_KEY = "deviceagentd.voiceSession";

function voiceUrl(gateway) {
  const scheme = gateway.voice.tls ? "wss" : "ws";
  const params = new URLSearchParams({ "client-id": "console" });
  if (auth.token) params.set("authorization", auth.token);
  return `${scheme}://${location.hostname}:${gateway.voice.port}${gateway.voice.path}?${params}`;
}

// Why the microphone cannot be used from this page, or null.
export function micProblem(gateway) {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return [
      `The microphone is unavailable here: browsers let a page use it only over https:// or on localhost, `
        + `and this page is ${location.origin}.`,
      "Either give the gateway a certificate (http.tls_cert_file and http.tls_key_file, and voice.tls_cert_file and "
        + "voice.tls_key_file for the voice port, in deviceagentd.toml) and open the console with https://, or reach it "
        + "as localhost through an SSH tunnel: ssh -L 3000:127.0.0.1:3000 -L 3001:127.0.0.1:3001 <gateway>, then "
        + "open http://localhost:3000.",
    ];
  }
  if (location.protocol === "https:" && !gateway.voice.tls) {
    return [
      "This page is on https://, but the voice port serves plain ws://, which an https page may not open.",
      "Set voice.tls_cert_file and voice.tls_key_file (the same files as http.tls_* will do) and restart the gateway.",
    ];
  }
  return null;
}

class Player {
  constructor(context) {
    this.context = context;
    this.next = 0;
    this.seconds = 0;
  }

  play(bytes, rate) {
    const samples = new Int16Array(bytes.byteLength >> 1);
    new Uint8Array(samples.buffer).set(new Uint8Array(bytes, 0, samples.length * 2));
    if (!samples.length) return;
    const buffer = this.context.createBuffer(1, samples.length, rate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 0x8000;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    this.next = Math.max(this.next, this.context.currentTime + 0.05);
    source.start(this.next);
    this.next += buffer.duration;
    this.seconds += buffer.duration;
  }
}

export async function render(main, site) {
  const gateway = site.gateway;
  const problem = micProblem(gateway);
  const log = h("div", { class: "chat-log", id: "voice-log", "aria-live": "polite" });
  const state = h("span", { id: "voice-state", class: "muted" }, "not connected");
  const heard = h("span", { id: "voice-audio", class: "muted" });
  const meter = h("div", { class: "meter", title: "microphone level" }, h("span"));
  const connect = h("button", { type: "button", id: "voice-connect", class: "primary" }, "Connect");
  const talk = h("button", { type: "button", id: "voice-talk", class: "talk", disabled: true }, "Hold to talk");
  const auto = h("input", { type: "checkbox", id: "voice-auto" });
  const notice = problem ? h("div", { class: "notice bad", id: "voice-unavailable" }, problem.map((p) => h("p", {}, p))) : null;
  replace(main, h("h1", {}, "Voice test"),
    h("p", { class: "muted" }, `Talk to the gateway as a speaker would: your microphone goes to /ws/voice on port `
      + `${gateway.voice.port}, and the spoken reply is played here.`),
    notice,
    h("div", { class: "card" },
      h("div", { class: "toolbar" }, connect, talk,
        h("label", { class: "inline" }, h("span", {}, auto, " The gateway finds the end of speech (auto)")),
        meter, state),
      log, heard));
  if (problem) {
    connect.disabled = true;
    return null;
  }

  let ws = null, context = null, mic = null, player = null, listening = false, outputRate = 16000;
  let reply = null;
  const sessionId = sessionStorage.getItem(SESSION_KEY) || `console-voice-${Math.random().toString(36).slice(2, 10)}`;
  sessionStorage.setItem(SESSION_KEY, sessionId);

  function line(role, text) {
    const el = h("div", { class: `bubble ${role}` }, text);
    log.append(el);
    log.scrollTop = log.scrollHeight;
    return el;
  }

  function sendJson(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  async function startMic() {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
    await context.audioWorklet.addModule("/console/mic-worklet.js");
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "pcm-16k");
    node.port.onmessage = ({ data }) => {
      meter.firstChild.style.width = `${Math.min(100, Math.round(data.level * 400))}%`;
      if (listening && ws && ws.readyState === WebSocket.OPEN) ws.send(data.pcm);
    };
    source.connect(node);
    mic = { stream, source, node };
  }

  function stopMic() {
    if (!mic) return;
    mic.source.disconnect();
    mic.node.port.onmessage = null;
    for (const track of mic.stream.getTracks()) track.stop();
    mic = null;
    meter.firstChild.style.width = "0";
  }

  function onMessage(event) {
    if (typeof event.data !== "string") {
      player.play(event.data, outputRate);
      heard.textContent = `played ${player.seconds.toFixed(1)} s of reply audio`;
      return;
    }
    const message = JSON.parse(event.data);
    switch (message.type) {
      case "hello":
        outputRate = (message.audio_params && message.audio_params.sample_rate) || 16000;
        state.textContent = `connected (session ${message.sessionId || message.session_id}, ${message.provider || "?"})`;
        talk.disabled = false;
        break;
      case "asr":
        if (message.definite) line("user", message.text || "(nothing recognised)");
        else state.textContent = `hearing: ${message.text}`;
        break;
      case "agent_reply":
        if (!reply) reply = line("assistant", "");
        reply.textContent = message.streaming === false ? message.text : reply.textContent + message.text;
        break;
      case "tts_complete":
        reply = null;
        state.textContent = "turn over";
        break;
      case "error":
        line("error", `${message.message} (${message.code})`);
        break;
      default:
        break;
    }
  }

  async function open() {
    connect.disabled = true;
    context = context || new AudioContext();
    await context.resume();
    player = player || new Player(context);
    try {
      await startMic();
    } catch (error) {
      line("error", `The microphone could not be opened: ${error.message || error}`);
      connect.disabled = false;
      return;
    }
    state.textContent = "connecting…";
    ws = new WebSocket(voiceUrl(gateway));
    ws.binaryType = "arraybuffer";
    ws.onopen = () => sendJson({ type: "hello", version: 1, sessionId,
      audio_params: { format: "pcm", sample_rate: 16000, channels: 1, frame_duration: 60 } });
    ws.onmessage = onMessage;
    ws.onclose = (event) => {
      state.textContent = `closed${event.reason ? `: ${event.reason}` : ""} (${event.code})`
        + (event.code === 1006 && gateway.voice.tls ? " — if the certificate is self-signed, open "
          + `https://${location.hostname}:${gateway.voice.port}/ once and accept it` : "");
      talk.disabled = true;
      listening = false;
      stopMic();
      connect.textContent = "Connect";
      connect.disabled = false;
      ws = null;
    };
    connect.textContent = "Disconnect";
    connect.disabled = false;
  }

  function listen(on) {
    if (on === listening) return;
    listening = on;
    talk.classList.toggle("on", on);
    if (on) sendJson({ type: "listen", mode: auto.checked ? "auto" : "manual", state: "start" });
    else if (!auto.checked) sendJson({ type: "listen", state: "stop" });
    state.textContent = on ? "listening…" : "thinking…";
  }

  connect.addEventListener("click", () => {
    if (ws) { sendJson({ type: "goodbye" }); ws.close(); } else open();
  });
  // Hold to talk (mouse, touch, keyboard); with auto, a click starts listening and the gateway ends it.
  talk.addEventListener("pointerdown", () => listen(auto.checked ? !listening : true));
  talk.addEventListener("pointerup", () => { if (!auto.checked) listen(false); });
  talk.addEventListener("pointerleave", () => { if (!auto.checked) listen(false); });
  talk.addEventListener("keydown", (e) => { if (e.key === " " && !e.repeat) listen(auto.checked ? !listening : true); });
  talk.addEventListener("keyup", (e) => { if (e.key === " " && !auto.checked) listen(false); });
  auto.addEventListener("change", () => { talk.textContent = auto.checked ? "Click to talk" : "Hold to talk"; });

  return {
    close() {
      if (ws) ws.close();
      stopMic();
      if (context) context.close();
    },
  };
}
