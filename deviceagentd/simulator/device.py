"""SimulatedDevice: one device of a product, speaking SPEC §2 to the broker. Used by the
`simulate-device` CLI, by tests and by benchmarks."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

from deviceagentd.core.spec import ProductSpec
from deviceagentd.mqtt.codec import DecodeError, Encoding, content_type_of, decode, encode
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates
from deviceagentd.simulator.clock import NtpSample, now_ms, ntp_sample
from deviceagentd.simulator.link import DeviceLink, LinkSettings, parse_broker_url
from deviceagentd.simulator.model import DeviceModel, ReceivedCommand

# A device has no business receiving more than this; the gateway's own default limit.
MAX_PAYLOAD_BYTES = 256 * 1024
NTP_TIMEOUT_S = 5.0
OFFLINE_FLUSH_S = 2.0


@dataclass(frozen=True)
class SimulatorOptions:
    """How the device connects and behaves. Intervals in seconds; 0 turns a timer off."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = None
    client_id: str | None = None  # default: sim-<deviceId>
    protocol: int = 5  # 5 or 4 (MQTT 3.1.1)
    tls_insecure: bool = False
    encoding: Encoding = "json"
    qos: int = 0  # state and heartbeat; status, events and answers always go QoS 1
    heartbeat_s: float = 30.0
    state_interval_s: float = 0.0
    random_events_s: float = 0.0
    # None: only when asked (sync_clock); 0: once after connecting; N: every N seconds.
    ntp_interval_s: float | None = None
    answer_delay_ms: int = 0
    answer: bool = True  # False: take commands but never answer (gateway timeout tests)
    seed: int | None = None
    source: str = "simulator"
    topics: TopicTemplates = field(default_factory=TopicTemplates)

    def __post_init__(self) -> None:
        if self.protocol not in (4, 5):
            raise ValueError(f"protocol must be 5 or 4 (MQTT 3.1.1), not {self.protocol}")
        if self.encoding not in ("json", "cbor"):
            raise ValueError(f"encoding must be json or cbor, not {self.encoding!r}")
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {self.qos}")


class _DeviceLog(logging.LoggerAdapter[logging.Logger]):
    """Prefix every line with the device id: a benchmark may run hundreds in one process."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.extra['device'] if self.extra else ''} {msg}", kwargs


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


class SimulatedDevice:
    """One simulated device. `state` is its live state, `commands_received` every command
    message it accepted (duplicates and ignored ones excluded), `ntp_samples` every time sync."""

    def __init__(self, spec: ProductSpec, device_id: str, options: SimulatorOptions | None = None) -> None:
        self.spec = spec
        self.device_id = device_id
        self.options = options or SimulatorOptions()
        self.log = _DeviceLog(logging.getLogger("deviceagentd.simulator"), {"device": device_id})
        self.rng = random.Random(self.options.seed)
        self.model = DeviceModel(spec, self.rng, self.options.source)
        self.commands_received: list[ReceivedCommand] = []
        self.ntp_samples: list[NtpSample] = []
        self.address = parse_broker_url(self.options.url)
        if self.options.username is not None:  # --username wins over user:password@ in the URL
            self.address = replace(
                self.address, username=self.options.username, password=self.options.password
            )
        topics = self.options.topics
        product = spec.product_id
        self.topics = {kind: topics.format(kind, product, device_id) for kind in TopicKind}
        self._link: DeviceLink | None = None
        self._timers: set[asyncio.Task[None]] = set()
        self._work: set[asyncio.Task[None]] = set()
        self._pending_answers: set[str] = set()
        self._ntp_waiters: dict[str, tuple[float, asyncio.Future[NtpSample]]] = {}

    @property
    def state(self) -> dict[str, Any]:
        return self.model.state

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.is_connected

    def topic(self, kind: TopicKind) -> str:
        return self.topics[kind]

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (retrying while the broker is away) and publish the online status. Returns
        once that is done; wrap it in asyncio.wait_for to give up."""
        if self._link is not None:
            raise RuntimeError("device already started")
        offline = self.model.status_payload("offline", with_state=False)
        settings = LinkSettings(
            address=self.address,
            client_id=self.options.client_id or f"sim-{self.device_id}",
            protocol=self.options.protocol,
            will_topic=self.topic(TopicKind.TELEMETRY),
            will_payload=encode(offline, self.options.encoding),
            content_type=content_type_of(self.options.encoding),
            subscriptions=(self.topic(TopicKind.COMMAND), self.topic(TopicKind.NTP_RESPONSE)),
        )
        self._link = DeviceLink(settings, self._on_message, self._on_online, self.log, self.rng)
        try:
            await self._link.connect()
        except BaseException:
            await self._link.kill()
            self._link = None
            raise
        self._start_timers()

    async def stop(self, publish_offline: bool = True) -> None:
        """Say goodbye (offline status unless told not to), then disconnect cleanly."""
        link, self._link = self._link, None
        self._stop_background()
        if link is None:
            return
        if publish_offline and link.is_connected:
            self.model.set_connected(False)
            # The same payload as the last will, so the gateway sees one shape for "offline".
            offline = self.model.status_payload("offline", with_state=False)
            sent = await self._send(link, TopicKind.TELEMETRY, offline, 1)
            if sent:
                await link.flush(OFFLINE_FLUSH_S)
        await link.disconnect()
        self.log.info("disconnected%s", " after publishing offline status" if publish_offline else "")

    async def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes the last will."""
        link, self._link = self._link, None
        self._stop_background()
        if link is not None:
            await link.kill()
            self.log.info("connection dropped without goodbye; the broker publishes the last will")

    def _stop_background(self) -> None:
        for task in list(self._timers) + list(self._work):
            task.cancel()
        self._pending_answers.clear()
        for _, waiter in self._ntp_waiters.values():
            waiter.cancel()
        self._ntp_waiters.clear()

    async def _on_online(self, first: bool) -> None:
        self.model.set_connected(True)
        sent = await self._publish(TopicKind.TELEMETRY, self.model.status_payload("online"), 1)
        link = self._link
        if link is not None and sent:
            self.log.info(
                "%s %s as %s (%s, %s), online with %s",
                "connected to" if first else "reconnected to",
                link.settings.address.url, link.settings.client_id, link.version_name,
                self.options.encoding.upper(), _compact(self.state),
            )

    # --- what the device sends --------------------------------------------------------------------

    async def emit_event(self, name: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """Publish event `name`. `fields` is sent as given; None fills the spec's output fields
        from the state or sample values. Returns the event's `data`."""
        if fields is None:
            fields = self.model.event_fields(name)
        payload = self.model.event_payload(name, fields)
        if name not in self.spec.events:
            self.log.warning("event %s is not in the %s spec; sending it anyway", name, self.spec.product_id)
        data: dict[str, Any] = payload["data"]
        if await self._publish(TopicKind.EVENT, payload, 1):
            self.log.info("event %s sent: %s", name, _compact({k: v for k, v in data.items() if k != "event"}))
        return data

    async def report_state(self, **fields: Any) -> None:
        """Set `fields` (as given, even wrong ones, with a warning) and publish the full state."""
        for problem in self.model.update_state(fields):
            self.log.warning("state field %s (sending it anyway)", problem)
        if await self._publish(TopicKind.TELEMETRY, self.model.state_payload(), self.options.qos):
            self.log.info("state sent: %s", _compact(self.state))

    async def sync_clock(self, timeout_s: float = NTP_TIMEOUT_S) -> NtpSample:
        """One NTP exchange with the gateway; raises TimeoutError when nobody answers."""
        request_id = f"ntp-{uuid.uuid4().hex[:12]}"
        waiter: asyncio.Future[NtpSample] = asyncio.get_running_loop().create_future()
        t1 = now_ms()
        self._ntp_waiters[request_id] = (t1, waiter)
        try:
            payload = {"deviceSendTime": int(t1), "requestId": request_id}
            await self._publish(TopicKind.NTP_REQUEST, payload, 0)
            sample = await asyncio.wait_for(waiter, timeout_s)
        finally:
            self._ntp_waiters.pop(request_id, None)
        self.ntp_samples.append(sample)
        self.log.info("%s", sample.describe())
        return sample

    async def _publish(self, kind: TopicKind, payload: dict[str, Any], qos: int) -> bool:
        link = self._link
        if link is None:
            return False
        return await self._send(link, kind, payload, qos)

    async def _send(self, link: DeviceLink, kind: TopicKind, payload: dict[str, Any], qos: int) -> bool:
        sent = await link.publish(self.topic(kind), encode(payload, self.options.encoding), qos)
        if not sent:
            self.log.warning("not connected: dropped a %s message", kind.value)
        return sent

    # --- what the device receives ---------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes, properties: dict[str, Any]) -> None:
        received_at = now_ms()  # first thing: this is t4 of an NTP exchange
        content_type = (properties.get("content_type") or [None])[0]
        try:
            message, encoding = decode(payload, content_type, MAX_PAYLOAD_BYTES)
        except DecodeError as exc:
            self.log.warning("ignored a message on %s: %s", topic, exc)
            return
        if topic == self.topic(TopicKind.NTP_RESPONSE):
            self._on_ntp_response(message, received_at)
        elif topic == self.topic(TopicKind.COMMAND):
            if (properties.get("retain") or 0) != 0:
                self.log.warning("ignored a retained command (the gateway must not retain commands)")
                return
            self._on_command(message, encoding)

    def _on_command(self, message: dict[str, Any], encoding: Encoding) -> None:
        command = self.model.read_command(message, encoding)
        if isinstance(command, str):
            self.log.warning("ignored command %s: it %s", _compact(message.get("cmd")), command)
            return
        key = str(command.request_id)
        cached = self.model.cached_answer(command.request_id)
        if cached is not None:
            self.log.info("repeated request %s: sending the same answer again", key)
            self._spawn(self._publish(TopicKind.RESPONSE, cached, 1))
            return
        if key in self._pending_answers:
            self.log.info("repeated request %s: still working on it", key)
            return
        self.commands_received.append(command)
        if not self.options.answer:
            self.log.info(
                "command %s %s [%s] received, not answering (--no-answer)",
                command.cmd, _compact(command.params), key,
            )
            return
        self._pending_answers.add(key)
        self._spawn(self._answer(command))

    async def _answer(self, command: ReceivedCommand) -> None:
        try:
            if self.options.answer_delay_ms > 0:
                await asyncio.sleep(self.options.answer_delay_ms / 1000)
            answer = self.model.execute(command)
        finally:
            self._pending_answers.discard(str(command.request_id))
        result = f"{answer['code']} {answer['msg']}"
        if "data" in answer:
            result += f" {_compact(answer['data'])}"
        self.log.info("command %s %s [%s] → %s", command.cmd, _compact(command.params), command.request_id, result)
        await self._publish(TopicKind.RESPONSE, answer, 1)
        if answer["code"] == 0:
            await self._publish(TopicKind.TELEMETRY, self.model.state_payload(), self.options.qos)

    def _on_ntp_response(self, message: dict[str, Any], received_at: float) -> None:
        entry = self._ntp_waiters.get(str(message.get("requestId")))
        if entry is None:
            # The gateway may leave requestId out; then deviceSendTime is what identifies it.
            sent = message.get("deviceSendTime")
            entry = next((e for e in self._ntp_waiters.values() if int(e[0]) == sent), None)
        t2, t3 = message.get("serverRecvTime"), message.get("serverSendTime")
        if entry is None or not _is_number(t2) or not _is_number(t3):
            self.log.warning("ignored an NTP response that matches no request: %s", _compact(message))
            return
        t1, waiter = entry
        synced = message.get("serverClockSynced")
        sample = ntp_sample(t1, t2, t3, received_at, synced if isinstance(synced, bool) else None)
        if not waiter.done():
            waiter.set_result(sample)

    # --- timers -----------------------------------------------------------------------------------

    def _start_timers(self) -> None:
        options = self.options
        if options.heartbeat_s > 0:
            self._timer(self._every(options.heartbeat_s, self._heartbeat))
        if options.state_interval_s > 0:
            self._timer(self._every(options.state_interval_s, self._drift))
        if options.random_events_s > 0:
            self._timer(self._random_events(options.random_events_s))
        if options.ntp_interval_s is not None:
            self._timer(self._ntp_loop(options.ntp_interval_s))

    async def _every(self, interval_s: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await action()

    async def _heartbeat(self) -> None:
        if await self._publish(TopicKind.TELEMETRY, self.model.status_payload("online"), self.options.qos):
            self.log.debug("heartbeat sent")

    async def _drift(self) -> None:
        self.model.drift()
        if await self._publish(TopicKind.TELEMETRY, self.model.state_payload(), self.options.qos):
            self.log.info("state sent: %s", _compact(self.state))

    async def _random_events(self, mean_s: float) -> None:
        while True:
            # Exponential gaps: events arrive at random, on average every mean_s seconds.
            await asyncio.sleep(self.rng.expovariate(1 / mean_s))
            chosen = self.model.random_event()
            if chosen is not None:
                await self.emit_event(*chosen)

    async def _ntp_loop(self, interval_s: float) -> None:
        while True:
            try:
                await self.sync_clock()
            except TimeoutError:
                self.log.warning(
                    "no NTP answer from the gateway within %.0f s (is deviceagentd running?)",
                    NTP_TIMEOUT_S,
                )
            if interval_s <= 0:
                return
            await asyncio.sleep(interval_s)

    def _timer(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._timers.add(task)
        task.add_done_callback(self._done)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._work.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._timers.discard(task)
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("internal error: %r", task.exception())
