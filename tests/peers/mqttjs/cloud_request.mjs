// A fleet back end's request to a gateway over the cloud broker, sent with mqtt.js as MQTT 5:
// a response topic and correlation data, as mqtt.js users send request/response.
//
//   node cloud_request.mjs URL REQUEST_TOPIC RESPONSE_TOPIC BODY_JSON
//
// Prints {"topic", "correlation" (hex), "contentType", "body"} for the first reply on
// RESPONSE_TOPIC, or {"timeout": true}.
import mqtt from "mqtt";

const [url, requestTopic, responseTopic, body] = process.argv.slice(2);
const correlation = Buffer.from("mqttjs-" + Date.now());
const client = mqtt.connect(url, { clientId: `mqttjs-cloud-${process.pid}`, protocolVersion: 5, reconnectPeriod: 0 });
let timer;
const finish = (value) => {
  process.stdout.write(JSON.stringify(value) + "\n");
  clearTimeout(timer);
  client.end(true);
};

client.on("message", (topic, payload, packet) => {
  const props = packet.properties || {};
  if (!props.correlationData || !Buffer.from(props.correlationData).equals(correlation)) return;
  finish({ topic, correlation: Buffer.from(props.correlationData).toString("hex"), sent: correlation.toString("hex"),
           contentType: props.contentType ?? null, body: JSON.parse(payload.toString()) });
});
client.on("connect", () => {
  client.subscribe(responseTopic, { qos: 1 }, () => {
    client.publish(requestTopic, body, {
      qos: 1, properties: { responseTopic, correlationData: correlation, contentType: "application/json" },
    });
    timer = setTimeout(() => finish({ timeout: true }), 10000);
  });
});
