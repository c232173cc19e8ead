// A device as mqtt.js runs one: publishes numbered QoS 1 events and reports, on stdout, every
// PUBACK from the broker (from then on the message is the broker's and the gateway's to keep).
//
//   node device.mjs URL PRODUCT DEVICE COUNT RATE [PAD] [RUN]
//
// Stdout, one JSON object a line: {"acked": n} per PUBACK, then {"done": true, "acked": k}
// once all COUNT are acknowledged. mqtt.js keeps unacknowledged QoS 1 messages and sends them
// again after a reconnect, as a real device's library does.
import mqtt from "mqtt";

const [url, product, device, countText, rateText, padText = "0", run = "run"] = process.argv.slice(2);
const count = Number(countText);
const rate = Number(rateText);
const pad = "x".repeat(Number(padText));
const topic = `v1/${product}/${device}/event`;

const client = mqtt.connect(url, {
  clientId: `mqttjs-${device}`,
  protocolVersion: 5,
  clean: true,
  reconnectPeriod: 200,
  connectTimeout: 5000,
});
client.on("error", () => {}); // reconnects by itself; errors are expected during faults

let acked = 0;
let next = 0;
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");

function publishOne(n) {
  const body = { type: "event", data: { event: "fault_seq", n, run, pad }, ts: Date.now() };
  client.publish(topic, JSON.stringify(body), { qos: 1 }, (err) => {
    if (err) return; // only when the client is ended; a lost connection resends instead
    acked += 1;
    out({ acked: n });
    if (acked === count) {
      out({ done: true, acked });
      // No process.exit(): it would cut off stdout lines still queued for a slow reader.
      // With the client ended and the timer cleared, Node exits once stdout has drained.
      client.end(false);
    }
  });
}

client.once("connect", () => {
  // Messages at RATE per second, in 10 ms slices; publishes made while disconnected wait in
  // mqtt.js's outgoing store.
  const perTick = Math.max(1, Math.round(rate / 100));
  const timer = setInterval(() => {
    for (let i = 0; i < perTick && next < count; i += 1) publishOne(next++);
    if (next >= count) clearInterval(timer);
  }, 10);
});
