// A device's time-sync request encoded by cbor-x, sent with mqtt.js; prints the answer.
//
//   node ntp.mjs URL PRODUCT DEVICE
//
// cbor-x encodes Date.now() (above 2^32) as a float64, which is how a JavaScript device sends
// deviceSendTime. Prints {"answer": {...}} (the decoded CBOR answer) or {"timeout": true}.
import mqtt from "mqtt";
import { decode, encode } from "cbor-x";

const [url, product, device] = process.argv.slice(2);
const base = `device-agent/${product}/device/${device}/ntp`;
const client = mqtt.connect(url, { clientId: `mqttjs-ntp-${device}`, protocolVersion: 5, reconnectPeriod: 0 });
let timer;
const finish = (value) => {
  // BigInt (cbor-x's default for a CBOR 64-bit integer) is not JSON: sent as text, and its
  // type reported, since a device's time arithmetic fails on a BigInt mixed with Date.now().
  process.stdout.write(JSON.stringify(value, (key, v) => (typeof v === "bigint" ? v.toString() : v)) + "\n");
  clearTimeout(timer);
  client.end(true);
};

client.on("message", (topic, payload) => {
  const answer = decode(payload);
  const types = Object.fromEntries(Object.entries(answer).map(([k, v]) => [k, typeof v]));
  // What the device computes with: the offset, from the four stamps.
  const t4 = Date.now();
  const offset = ((answer.serverRecvTime - answer.deviceSendTime) + (answer.serverSendTime - t4)) / 2;
  finish({ answer, types, offset, bytes: payload.toString("hex") });
});
client.on("connect", () => {
  client.subscribe(`${base}/response`, { qos: 1 }, () => {
    const request = encode({ deviceSendTime: Date.now(), requestId: "js-1" });
    process.stderr.write(`request ${Buffer.from(request).toString("hex")}\n`);
    client.publish(`${base}/request`, request, { qos: 0 });
    timer = setTimeout(() => finish({ timeout: true }), 5000);
  });
});
