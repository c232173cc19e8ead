"""Time sync for devices (SPEC §2 "NTP").

serverRecvTime is taken by the caller as the message arrives; serverSendTime right before the
bytes go to the socket. The JSON answer is encoded up to the last field first, so only the
digits of serverSendTime are written between the stamp and the publish. Nothing here waits on
storage or any queue.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from deviceagentd.core.metrics import Metrics
from deviceagentd.mqtt.codec import DecodeError, Encoding, content_type_of, decode, encode
from deviceagentd.mqtt.link import MqttLink
from deviceagentd.mqtt.rejects import RejectReporter
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates

MAX_NTP_PAYLOAD = 1024
MAX_SEND_TIME = 2.0**63


class BadNtpRequest(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class NtpRequest:
    device_send_time: int
    request_id: Any
    encoding: Encoding
    float_times: bool = False
    """The device sent its time as a CBOR float (JavaScript's cbor-x does): the CBOR answer's
    times are floats too, which cbor-x decodes to numbers; a 64-bit CBOR integer would
    decode to a BigInt, which the device's arithmetic with Date.now() cannot mix."""


def parse_request(payload: bytes, content_type: str | None) -> NtpRequest:
    try:
        body, encoding = decode(payload, content_type, MAX_NTP_PAYLOAD)
    except DecodeError as exc:
        raise BadNtpRequest(exc.reason, exc.detail) from exc
    sent = body.get("deviceSendTime")
    # JavaScript devices send Date.now(), which cbor-x encodes as a float64 (it is above 2^32):
    # a whole float is a whole number of milliseconds.
    float_times = isinstance(sent, float)
    if isinstance(sent, float) and sent.is_integer() and 0 <= sent < MAX_SEND_TIME:
        sent = int(sent)
    if isinstance(sent, bool) or not isinstance(sent, int) or sent < 0:
        raise BadNtpRequest("ntp_without_device_send_time",
                            "deviceSendTime must be a non-negative whole number (epoch ms)")
    request_id = body.get("requestId")
    if request_id is not None and not isinstance(request_id, str | int):
        raise BadNtpRequest("bad_ntp_request_id", "requestId must be a string or an integer")
    return NtpRequest(sent, request_id, encoding, float_times and encoding == "cbor")


class NtpResponder:
    def __init__(self, link: MqttLink, topics: TopicTemplates, metrics: Metrics, rejects: RejectReporter,
                 clock_synced: Any) -> None:
        self._link = link
        self._topics = topics
        self._metrics = metrics
        self._rejects = rejects
        # Anything with .current() -> bool (ClockSyncState); injected for tests.
        self._clock_synced = clock_synced

    def handle(self, product_id: str, device_id: str, payload: bytes, content_type: str | None,
               recv_ns: int) -> Encoding | None:
        """Answer one request; returns its encoding, or None when it was rejected (counted, logged)."""
        try:
            request = parse_request(payload, content_type)
        except BadNtpRequest as exc:
            self._rejects.reject("ntp", exc.reason, device_id, exc.detail)
            return None
        topic = self._topics.format(TopicKind.NTP_RESPONSE, product_id, device_id)
        body: dict[str, Any] = {
            "deviceSendTime": request.device_send_time,
            "serverRecvTime": recv_ns // 1_000_000,
            "serverClockSynced": self._clock_synced.current(),
        }
        if request.request_id is not None:
            body["requestId"] = request.request_id
        if request.encoding == "json":
            head = json.dumps(body, separators=(",", ":"), ensure_ascii=False)[:-1].encode()
            send_ns = time.time_ns()
            payload_out = head + b',"serverSendTime":' + str(send_ns // 1_000_000).encode() + b"}"
        elif request.float_times:
            body["deviceSendTime"] = float(request.device_send_time)
            body["serverRecvTime"] = float(body["serverRecvTime"])
            send_ns = time.time_ns()
            body["serverSendTime"] = float(send_ns // 1_000_000)
            payload_out = encode(body, "cbor")
        else:
            send_ns = time.time_ns()
            body["serverSendTime"] = send_ns // 1_000_000
            payload_out = encode(body, "cbor")
        try:
            self._link.publish_now(topic, payload_out, content_type_of(request.encoding))
        except Exception:
            self._rejects.reject("ntp", "broker_unavailable", device_id, "broker connection lost before the answer")
            return None
        self._metrics.ntp_turnaround.observe((send_ns - recv_ns) / 1e9)
        self._metrics.messages_out.inc({"kind": "ntp_response"})
        return request.encoding
