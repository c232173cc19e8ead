// The voice platform (in-room speakers, Tuya style): speakers and their rooms, whether each holds
// a live token pair (never the token), the rooms' devices and scenes with a button to run one.

import { get, post } from "./api.js";
import { badge, errorText, h, replace, time } from "./ui.js";

function tokenCell(token) {
  if (!token.live) return h("td", {}, badge("no token", "offline"));
  return h("td", {}, badge(token.accessValid ? "live token" : "access expired (can refresh)", token.accessValid ? "ok" : "warning"),
    h("div", { class: "hint" }, `issued ${time(token.issuedAt)}, access until ${time(token.accessExpiresAt)}`));
}

function sceneCard(scene) {
  const result = h("div", { class: "result", "aria-live": "polite" });
  const run = h("button", { type: "button", class: "primary", dataset: { scene: scene.sceneId } }, "Run");
  run.addEventListener("click", async () => {
    run.disabled = true;
    replace(result, h("span", { class: "muted" }, "running…"));
    try {
      const answer = await post(`/api/voice-platform/scenes/${encodeURIComponent(scene.sceneId)}/run`);
      replace(result, badge(answer.ok ? "done" : "some steps failed", answer.ok ? "ok" : "bad"),
        h("ul", {}, answer.steps.map((s) => h("li", {}, h("span", { class: "mono" }, `${s.deviceId} ${s.command}`), " ",
          s.ok ? h("span", { class: "ok" }, "ok") : h("span", { class: "error" }, `${s.msg} (${s.code})`)))));
    } catch (error) {
      replace(result, h("span", { class: "error" }, errorText(error)));
    } finally {
      run.disabled = false;
    }
  });
  return h("div", { class: "command" }, h("h3", {}, scene.name, " ", h("span", { class: "muted mono" }, scene.sceneId)),
    h("div", { class: "hint" }, `${scene.parallel ? "all at once" : "in order"}: `,
      scene.steps.map((s) => `${s.deviceId} ${s.command}${Object.keys(s.params).length ? ` ${JSON.stringify(s.params)}` : ""}`).join("; ")),
    run, result);
}

export async function render(main, site) {
  const view = await get("/api/voice-platform");
  if (!view.enabled) {
    replace(main, h("h1", {}, "Voice platform"), h("div", { class: "notice" },
      "The voice platform API for in-room speakers is off on this gateway. Turn it on with a rooms file: "
      + "voiceplatform.rooms_file in deviceagentd.toml (an example is etc/deviceagentd/voice-platform.toml)."));
    return null;
  }
  const rooms = new Map(view.rooms.map((r) => [r.roomId, r]));
  replace(main, h("h1", {}, "Voice platform"),
    h("div", { class: "card" }, h("h2", {}, "Speakers"), h("table", { id: "speakers" },
      h("thead", {}, h("tr", {}, ["Speaker (voice_id)", "Room", "Token"].map((t) => h("th", {}, t)))),
      h("tbody", {}, view.speakers.map((s) => h("tr", {}, h("td", { class: "mono" }, s.voiceId),
        h("td", {}, rooms.has(s.roomId) ? rooms.get(s.roomId).name : s.roomId), tokenCell(s.token)))))),
    view.rooms.map((room) => h("div", { class: "card", dataset: { room: room.roomId } },
      h("h2", {}, room.name, " ", h("span", { class: "muted mono" }, room.roomId)),
      h("table", {}, h("thead", {}, h("tr", {}, ["Device", "Name", "Aliases", "Position", "Status"].map((t) => h("th", {}, t)))),
        h("tbody", {}, room.devices.map((d) => h("tr", {},
          h("td", {}, h("a", { class: "mono", href: `#/devices/${encodeURIComponent(d.deviceId)}` }, d.deviceId),
            h("div", { class: "hint" }, site.productName(d.productId))),
          h("td", {}, d.name), h("td", {}, d.aliases.join(", ")), h("td", {}, d.position || "—"),
          h("td", {}, d.registered ? badge(d.online ? "online" : "offline") : badge("never connected", "offline")))))),
      room.scenes.length ? [h("h3", {}, "Scenes"), h("div", { class: "commands" }, room.scenes.map(sceneCard))] : null)));
  return null;
}
