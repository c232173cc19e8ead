"""The daemon: builds every part from the config, starts them in order, stops them in reverse.

Start: store (restores devices) → MQTT link → uplink (if on) → HTTP → READY. Stop: STOPPING →
HTTP closed → MQTT disconnected → uplink offline and disconnected (its outbox stays in the
store) → waiting commands failed → store flushed and closed, so every accepted
event is on disk before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from deviceagentd import __version__
from deviceagentd.agent.lazy import LazyLocalProvider
from deviceagentd.agent.runner import Agent
from deviceagentd.agent.sessions import SessionStore
from deviceagentd.agent.tools import DeviceTools
from deviceagentd.agent.types import Provider
from deviceagentd.agent.vision import VisionFrames
from deviceagentd.config import Config, parse_listen
from deviceagentd.core.catalog import Catalog
from deviceagentd.core.clock import Clock
from deviceagentd.core.commands import CommandService
from deviceagentd.core.events import EventRecorder
from deviceagentd.core.feed import SiteFeed
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry
from deviceagentd.core.timezone import site_zone
from deviceagentd.http.app import create_app, create_voice_app, runner_options
from deviceagentd.http.context import AgentContext, HttpContext, VoicePlatformView
from deviceagentd.http.live import LiveHub
from deviceagentd.http.tls import server_context
from deviceagentd.mcp.context import McpContext
from deviceagentd.memory import HeapTrimmer, trim_heap
from deviceagentd.mqtt.backpressure import AckGate
from deviceagentd.mqtt.clocksync import ClockSyncState
from deviceagentd.mqtt.ingest import Ingest
from deviceagentd.mqtt.link import MqttLink
from deviceagentd.mqtt.ntp import NtpResponder
from deviceagentd.mqtt.publisher import MqttCommandPublisher
from deviceagentd.mqtt.rejects import RejectReporter
from deviceagentd.mqtt.text_requests import TextRequests
from deviceagentd.mqtt.topics import TopicKind, TopicParser, subscription_filter
from deviceagentd.retired_models import retired_models
from deviceagentd.schedules.lazy import LazySchedules
from deviceagentd.store.database import DB_FILENAME
from deviceagentd.store.settings import StoreSettings
from deviceagentd.store.store import Store
from deviceagentd.systemd import Notifier
from deviceagentd.voice.recognizer.site import DeviceNames, registry_site
from deviceagentd.voice.service import VoiceService

if TYPE_CHECKING:
    from deviceagentd.schedules.runner import Announcer
    from deviceagentd.schedules.service import ScheduleService
    from deviceagentd.uplink.requests_api import CloudRequestHandler
    from deviceagentd.uplink.service import Uplink
    from deviceagentd.voiceplatform.service import VoicePlatform

log = logging.getLogger("deviceagentd")

# READY normally waits for the broker; a broker that is down at boot must not make systemd
# kill us, so after this long we report READY (degraded) and keep trying in the background.
READY_WITHOUT_BROKER_S = 20.0
TICK_S = 0.5
STATUS_EVERY_S = 5.0
# Freed heap goes back to the kernel this often (it piles up after bursts of traffic), and
# once a burst of registrations has settled.
TRIM_EVERY_S = 300.0
SUBSCRIBED_KINDS = (
    TopicKind.TELEMETRY,
    TopicKind.EVENT,
    TopicKind.RESPONSE,
    TopicKind.NTP_REQUEST,
    TopicKind.DEVICE_IN,
    TopicKind.PRODUCT_IN,
)
FRAME_PURGE_EVERY_S = 60.0
# base64 grows by 4/3; the JSON around a frame is small.
VISION_BODY_OVERHEAD = 64 * 1024


@dataclass
class Daemon:
    config: Config
    catalog: Catalog
    notifier: Notifier = field(default_factory=Notifier)
    clock: Clock = field(default_factory=Clock)
    ready_without_broker_s: float = READY_WITHOUT_BROKER_S
    # Tests inject a scripted provider; normally it is chosen by agent.provider.
    provider: Provider | None = None
    # What speaks scheduled words on a speaker; normally the voice service.
    announcer: Announcer | None = None
    # Builds the handler of requests from the cloud (commands, chat) once the daemon's parts
    # exist; used only with the uplink on. None: the commands and chat of uplink/requests.py.
    cloud_requests: Callable[[Daemon], CloudRequestHandler] | None = None

    def __post_init__(self) -> None:
        cfg = self.config
        self.metrics = Metrics()
        # The site's time zone (site.timezone, else the system's): local times in replies.
        self.site_zone = site_zone(cfg.site.timezone)
        self.store = Store(
            Path(cfg.storage.dir) / DB_FILENAME,
            StoreSettings(
                batch_interval_s=cfg.storage.batch_interval_s,
                batch_max_rows=cfg.storage.batch_max_rows,
                max_backlog_rows=cfg.storage.max_backlog_rows,
                max_pending_rows=2 * cfg.storage.max_backlog_rows,
                events_max_age_days=cfg.storage.events_max_age_days,
                events_max_rows=cfg.storage.events_max_rows,
                commands_max_age_days=cfg.storage.commands_max_age_days,
                commands_max_rows=cfg.storage.commands_max_rows,
                retention_interval_s=cfg.storage.retention_interval_s,
                sessions_max_age_days=cfg.agent.sessions_max_age_days,
                outbox_max_rows=cfg.uplink.outbox_max_rows,
                outbox_max_bytes=cfg.uplink.outbox_max_bytes,
                outbox_max_age_s=cfg.uplink.outbox_max_age_s,
            ),
            clock_ms=self.clock.wall_ms,
        )
        # Every state change, online/offline, event and finished command, for live consumers.
        self.feed = SiteFeed()
        self.registry = DeviceRegistry(self.catalog, self.store, self.metrics, cfg.devices.offline_after_s, self.clock,
                                       routine_save_s=cfg.storage.device_state_save_s, feed=self.feed)
        # /api/stream's fan-out: subscribed to the feed only while a stream is open.
        self.live = LiveHub(self.feed)
        self.rejects = RejectReporter(self.metrics, self.clock)
        topics = cfg.mqtt.topics
        subscriptions = [subscription_filter(topics.template(k)) for k in SUBSCRIBED_KINDS]
        self.link = MqttLink(cfg.mqtt, subscriptions, self._on_message, self.metrics,
                             on_connection_lost=self._on_broker_lost)
        self.commands = CommandService(
            self.registry,
            self.store,
            MqttCommandPublisher(self.link, topics, self.metrics),
            self.metrics,
            self.clock,
            cfg.commands.default_timeout_ms,
        )
        self.ntp = NtpResponder(self.link, topics, self.metrics, self.rejects, ClockSyncState())
        self._build_agent()
        self.voice = VoiceService(cfg.voice, self.agent, self.metrics, self.clock, tokens=cfg.http.tokens,
                                  zone=self.site_zone,
                                  site=registry_site(self.registry, self._room_names))
        self.text_requests = TextRequests(
            self.agent, self.catalog, self.link, topics, self.metrics, self.rejects, self.clock,
            cfg.agent.text_requests_concurrency, cfg.agent.text_requests_queue, cfg.mqtt.max_payload_bytes,
        )
        self.ingest = Ingest(
            TopicParser(topics),
            self.registry,
            EventRecorder(self.registry, self.store, self.clock),
            self.commands,
            self.ntp,
            self.metrics,
            self.rejects,
            cfg.mqtt.max_payload_bytes,
            self.text_requests,
            gate=AckGate(self.store),
        )
        self.voice_platform: VoicePlatform | None = None
        if cfg.voiceplatform.rooms_file:
            # Imported only when speakers are configured: most gateways have none.
            from deviceagentd.voiceplatform.setup import build_voice_platform

            self.voice_platform = build_voice_platform(
                cfg.voiceplatform, self.catalog, self.registry, self.commands, self.store, self.metrics, self.clock
            )
        self._build_schedules()
        self.started_monotonic = time.monotonic()
        self.uplink: Uplink | None = self._build_uplink() if cfg.uplink.enabled else None
        self._tasks: list[asyncio.Task[Any]] = []
        self._runners: list[web.AppRunner] = []
        self.http_port = 0
        self.voice_port = 0
        self.ready = asyncio.Event()
        self._register_gauges()

    def _room_names(self) -> tuple[object, list[DeviceNames]]:
        """The voice platform's names, aliases and positions of devices (for the offline
        recogniser's grammar); its rooms object is the version."""
        platform = getattr(self, "voice_platform", None)
        if platform is None:
            return None, []
        rooms = platform.rooms
        names = [DeviceNames(device.product_id, (device.name, *device.aliases),
                             (device.position,) if device.position else ())
                 for room in rooms.rooms.values() for device in room.devices.values()]
        return id(rooms), names

    def _build_agent(self) -> None:
        cfg = self.config
        local = LazyLocalProvider(self.registry, self.site_zone)
        self._openai: Any = None
        provider: Provider = local
        if self.provider is not None:
            provider = self.provider
        elif cfg.agent.provider == "openai":
            # Imported only when configured: the idle footprint is measured without it.
            from deviceagentd.agent.openai import OpenAIProvider, OpenAISettings, resolve_api_key

            self._openai = OpenAIProvider(OpenAISettings(
                base_url=cfg.openai.base_url,
                api_key=resolve_api_key(cfg.openai.api_key, os.environ),
                model=cfg.openai.model,
                connect_timeout_s=cfg.openai.connect_timeout_s,
                read_timeout_s=cfg.openai.read_timeout_s,
                max_retries=cfg.openai.max_retries,
                max_tool_iterations=cfg.agent.max_tool_iterations,
            ))
            provider = self._openai
        self.sessions = SessionStore(self.store, cfg.agent.history_max_messages)
        self.frames = VisionFrames(Path(cfg.storage.dir) / "frames", cfg.vision.max_frame_bytes,
                                   cfg.vision.frame_ttl_s, self.clock)
        self.agent_tools = DeviceTools(self.registry, self.commands, self.store, self.clock)
        self.agent = Agent(
            provider=provider,
            fallback=local,
            tools=self.agent_tools,
            sessions=self.sessions,
            frames=self.frames,
            clock=self.clock,
            history_limit=cfg.agent.history_max_messages,
            turn_timeout_s=cfg.agent.turn_timeout_s,
            max_message_chars=cfg.agent.max_message_chars,
            max_turns_per_s=cfg.agent.max_turns_per_s,
        )

    def _build_schedules(self) -> None:
        self.schedules = LazySchedules(self.site_zone, self._schedule_service,
                                       self._start_schedules)
        self.agent_tools.schedules = self.schedules

    def _build_uplink(self) -> Uplink:
        # Imported only when uplink.url is set: a gateway without a fleet pays nothing for it.
        from deviceagentd.uplink.presence import GatewaySnapshot
        from deviceagentd.uplink.service import Uplink

        def snapshot() -> GatewaySnapshot:
            return GatewaySnapshot(__version__, time.monotonic() - self.started_monotonic,
                                   self.registry.online_count, self.registry.total, self.clock.wall_ms())

        def health() -> dict[str, Any]:
            storage = self._storage_detail()
            ok = self.link.is_connected and self.store.healthy and bool(storage.get("ok", True))
            return {"status": "ok" if ok else "degraded", "mqttConnected": self.link.is_connected,
                    "storage": {"healthy": self.store.healthy, "pendingRows": storage["pendingRows"],
                                "lostRows": storage["lostRows"]}}

        build = self.cloud_requests if self.cloud_requests is not None else _site_requests
        handler = build(self)
        return Uplink(self.config.uplink, self.store, self.feed, self.metrics, __version__, snapshot, health, handler)

    def _schedule_service(self) -> ScheduleService:
        # Imported when the site first has a schedule (schedules/lazy.py).
        from deviceagentd.schedules.runner import ActionRunner
        from deviceagentd.schedules.service import ScheduleService, ScheduleSettings

        cfg = self.config
        rooms = self.voice_platform.rooms if self.voice_platform is not None else None
        zone = self.schedules.zone
        runner = ActionRunner(self.commands, self.registry, self.announcer or self.voice, rooms, zone,
                              cfg.schedules.command_timeout_ms)
        return ScheduleService(
            self.store, self.commands, runner, zone, self.metrics, self.feed, rooms,
            ScheduleSettings(cfg.schedules.max_schedules, cfg.schedules.missed_grace_s), self.clock,
        )

    def _start_schedules(self, service: ScheduleService) -> None:
        self._tasks.append(asyncio.create_task(service.run(), name="schedules"))
        log.info("schedules: %d stored, times in %s", service.count, service.zone)

    def _on_message(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int | Awaitable[int]:

        # The link is built before ingest (ingest answers time sync through the link).
        return self.ingest.on_message(topic, payload, qos, properties)

    def _on_broker_lost(self) -> None:
        # A command or its answer may have been lost with the connection: its caller gets 503
        # now rather than 504 after the whole timeout. A late answer is still recorded.
        self.commands.fail_all("the MQTT broker connection was lost while waiting for the answer")
        # Messages held for storage room were never acknowledged: the broker sends them again.
        self._gate.let_go()

    @property
    def _gate(self) -> AckGate:
        gate = self.ingest.gate
        assert gate is not None
        return gate

    def _register_gauges(self) -> None:
        m = self.metrics
        m.gauge("deviceagentd_devices_total", "Registered devices", lambda: self.registry.total)
        m.gauge("deviceagentd_devices_online", "Devices online now", lambda: self.registry.online_count)
        m.gauge("deviceagentd_mqtt_connected", "1 when the broker connection is up",
                lambda: float(self.link.is_connected))
        m.gauge("deviceagentd_commands_pending", "Commands waiting for an answer", lambda: self.commands.pending_count)
        m.gauge("deviceagentd_store_pending_rows", "Rows accepted but not yet committed",
                lambda: self.store.stats().pending_rows)
        m.gauge("deviceagentd_store_commits_total", "SQLite commits since start", lambda: self.store.stats().commits,
                kind="counter")
        m.gauge("deviceagentd_store_lost_rows_total",
                "Accepted rows that were not stored (dropped past the memory bound, or refused by SQLite)",
                lambda: self.store.stats().dropped_rows, kind="counter")
        m.gauge("deviceagentd_store_backpressure",
                "1 while device messages wait unacknowledged for storage room", lambda: float(self._gate.holding))
        m.gauge("deviceagentd_mqtt_held_messages", "Device messages waiting unacknowledged for storage room",
                lambda: self._gate.held)
        m.gauge("deviceagentd_voice_sessions", "Voice sessions that said hello (each holds a voice slot)",
                lambda: self.voice.open_sessions)
        m.gauge("deviceagentd_voice_waiting_for_hello", "Voice connections that have not said hello yet",
                lambda: self.voice.sessions.waiting)
        m.gauge("deviceagentd_stream_clients", "Open /api/stream connections", lambda: self.live.clients)
        m.gauge("deviceagentd_stream_missed_total", "Changes dropped for /api/stream clients that read too slowly",
                lambda: self.live.missed_total, kind="counter")

        m.gauge("deviceagentd_agent_turns_running", "Conversation turns running now", lambda: self.agent.running_turns)
        m.gauge("deviceagentd_agent_turns_waiting", "Turns waiting for a start slot (agent.max_turns_per_s)",
                lambda: self.agent.waiting_turns)
        m.gauge("deviceagentd_text_requests_waiting", "MQTT text requests waiting for the agent",
                lambda: self.text_requests.waiting)
        m.gauge("deviceagentd_schedules", "Schedules stored (timers, alarms, recurring actions)",
                lambda: self.schedules.count)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # Opening the store (quick_check, migrations) happens once before any traffic; a
        # thread keeps the loop free for the watchdog meanwhile.
        await asyncio.to_thread(self.store.open)
        self.registry.load(self.store.load_devices())
        if self.store.has_schedules():
            self.schedules.service()
        if self.voice_platform is not None:
            await self._start_voice_platform(self.voice_platform)
        log.info("deviceagentd %s starting: %d products, %d known devices, %d schedules, state in %s", __version__,
                 len(self.catalog.products), self.registry.total, self.schedules.count, self.config.storage.dir)
        for retired in retired_models(self.config):
            log.warning("%s", retired.message(datetime.date.today()))
        for moved in self.store.recovered_from():
            log.warning("a corrupt database was moved aside as %s; health stays degraded until it is removed "
                        "from %s", moved, self.config.storage.dir)

        self._tasks.append(asyncio.create_task(self.link.run(), name="mqtt-link"))
        if self.uplink is not None:
            self.uplink.start()
        self._tasks.append(asyncio.create_task(self.registry.run(), name="registry"))
        self._tasks.append(asyncio.create_task(self.text_requests.run(), name="text-requests"))
        self._tasks.append(asyncio.create_task(self._purge_frames(), name="frames"))
        await self._start_http()
        self._tasks.append(asyncio.create_task(self._tick(), name="tick"))
        self._tasks.append(asyncio.create_task(self._announce_ready(), name="ready"))

    async def _start_voice_platform(self, platform: VoicePlatform) -> None:
        await platform.tokens.load()
        dropped = await platform.tokens.forget_except(set(platform.rooms.speakers))
        if dropped:
            log.info("voice platform: dropped the tokens of %d speakers no longer configured", dropped)
        log.info("voice platform: %d speakers, %d rooms (%s)", len(platform.rooms.speakers),
                 len(platform.rooms.rooms), self.config.voiceplatform.rooms_file)

    async def _start_http(self) -> None:
        cfg = self.config
        context = HttpContext(
            version=__version__,
            catalog=self.catalog,
            registry=self.registry,
            commands=self.commands,
            store=self.store,
            metrics=self.metrics,
            broker=self.link,
            broker_detail=self._broker_detail,
            storage_detail=self._storage_detail,
            tokens=cfg.http.tokens,
            max_body_bytes=cfg.http.max_body_bytes,
            started_monotonic=self.started_monotonic,
            gateway_detail=self._gateway_detail,
            uplink_detail=self.uplink.detail if self.uplink is not None else None,
            voice_platform=self._voice_platform_view(),
            live=self.live,
            agent=AgentContext(
                agent=self.agent,
                sessions=self.sessions,
                frames=self.frames,
                vision_body_bytes=cfg.vision.max_frame_bytes * 4 // 3 + VISION_BODY_OVERHEAD,
            ),
            schedules=self.schedules,
            mcp=self._mcp_context() if cfg.mcp.enabled else None,
        )
        app = create_app(context)
        if self.voice_platform is not None:
            from deviceagentd.voiceplatform.routes import add_routes as add_voice_platform_routes

            add_voice_platform_routes(app, self.voice_platform)
        self.http_port = await self._serve(app, cfg.http.listen, "HTTP API", _tls(cfg.http.tls_cert_file,
                                                                                   cfg.http.tls_key_file))
        self.voice_port = await self._serve(create_voice_app(context, self.voice), cfg.voice.listen, "voice port",
                                            _tls(cfg.voice.tls_cert_file, cfg.voice.tls_key_file))

    def _mcp_context(self) -> McpContext:
        return McpContext(
            config=self.config.mcp,
            api_tokens=self.config.http.tokens,
            registry=self.registry,
            commands=self.commands,
            schedules=self.schedules,
            store=self.store,
            metrics=self.metrics,
            clock=self.clock,
            version=__version__,
            rooms=self.voice_platform.rooms if self.voice_platform is not None else None,
        )

    def _voice_platform_view(self) -> VoicePlatformView | None:
        if self.voice_platform is None:
            return None
        from deviceagentd.voiceplatform.console import VoicePlatformConsole

        return VoicePlatformConsole(self.voice_platform)

    def _gateway_detail(self) -> dict[str, Any]:
        """For the console: where the voice WebSocket is, which ports speak TLS, the site's zone."""
        cfg = self.config
        return {
            "site": {"timezone": getattr(self.site_zone, "key", None) or str(self.site_zone)},
            "http": {"tls": bool(cfg.http.tls_cert_file)},
            "voice": {"port": self.voice_port, "tls": bool(cfg.voice.tls_cert_file), "path": "/ws/voice"},
            "agent": {"provider": cfg.agent.provider},
        }

    async def _serve(self, app: web.Application, listen: str, what: str, tls: ssl.SSLContext | None) -> int:
        # handler_cancellation: a client that goes away cancels its handler (a chat turn, a
        # command wait) instead of leaving it running. Short shutdown: open requests are
        # ended by on_shutdown (chat streams) and fail_all (commands) first.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handle_signals=False,
                               handler_cancellation=True, **runner_options(self.metrics))
        await runner.setup()
        self._runners.append(runner)
        endpoint = parse_listen(listen)
        site = web.TCPSite(runner, endpoint.host, endpoint.port, reuse_address=True, ssl_context=tls)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        port: int = sockets[0].getsockname()[1] if sockets else endpoint.port
        log.info("%s listening on %s://%s:%d", what, "https" if tls else "http", endpoint.host, port)
        return port

    async def _purge_frames(self) -> None:
        while True:
            await asyncio.sleep(FRAME_PURGE_EVERY_S)
            try:
                await self.frames.purge_expired()
            except OSError as exc:
                log.warning("could not purge expired vision frames: %s", exc)

    def _broker_detail(self) -> dict[str, Any]:
        status = self.link.status
        # subscribed: the gateway hears devices (what READY waits for; "connected" comes first).
        detail: dict[str, Any] = {"state": status.state, "subscribed": self.link.subscribed.is_set(),
                                  "url": self.config.mqtt.url, "connects": status.connects}
        if status.last_error:
            detail["lastError"] = status.last_error
        return detail

    def _storage_detail(self) -> dict[str, Any]:
        """Storage for /api/health. Degraded (`ok` false) while device messages wait for room,
        after any accepted row was lost (until a restart), and while a corrupt database moved
        aside at a start is still in the state directory (until an operator removes it)."""
        stats = self.store.stats()
        recovered = self.store.recovered_from()
        holding = self._gate.holding
        detail: dict[str, Any] = {
            "ok": not holding and not stats.dropped_rows and not recovered,
            "pendingRows": stats.pending_rows,
            "backpressure": holding,
            "lostRows": stats.dropped_rows,
        }
        if stats.last_error:
            detail["lastError"] = stats.last_error
        if recovered:
            detail["recoveredFromCorruption"] = recovered
        return detail

    async def _announce_ready(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.link.subscribed.wait(), self.ready_without_broker_s)
        if not self.link.subscribed.is_set():
            log.warning("MQTT broker %s still unreachable after %.0f s; serving HTTP and retrying",
                        self.config.mqtt.url, self.ready_without_broker_s)
        self.ready.set()
        trim_heap()
        self.notifier.ready(self._status_line())
        log.info("ready (%s)", self._status_line())

    def _status_line(self) -> str:
        status = self.link.status
        if self.link.is_connected:
            broker = "MQTT connected"
        else:
            broker = f"MQTT {status.state}" + (f" ({status.last_error})" if status.last_error else "")
        store = "" if self.store.healthy else ", storage failing"
        if self.store.healthy and self._gate.holding:
            store = ", storage behind (holding device messages)"
        if self.store.recovered_from():
            store += ", database was recovered from corruption"
        return f"{broker}, {self.registry.online_count}/{self.registry.total} devices online{store}"

    async def _tick(self) -> None:
        """Loop-lag measurement, systemd watchdog and STATUS, all from the event loop itself,
        so a stalled loop stops the pings and systemd restarts us."""
        loop = asyncio.get_running_loop()
        next_status = 0.0
        next_watchdog = 0.0
        trimmer = HeapTrimmer(every_s=TRIM_EVERY_S)
        expected = loop.time() + TICK_S
        while True:
            await asyncio.sleep(max(0.0, expected - loop.time()))
            now = loop.time()
            self.metrics.loop_lag.observe(max(0.0, now - expected))
            expected = now + TICK_S
            interval = self.notifier.watchdog_interval_s
            if interval and now >= next_watchdog and self.store.writer_alive:
                self.notifier.watchdog()
                next_watchdog = now + interval
            trimmer.tick(now, self.registry.total)
            if self.ready.is_set() and now >= next_status:
                self.notifier.status(self._status_line())
                next_status = now + STATUS_EVERY_S

    async def stop(self) -> bool:
        """Stop everything; True when every accepted row is stored (else it was logged)."""
        self.notifier.stopping()
        log.info("stopping")
        self.commands.fail_all("the gateway is shutting down")
        self.agent.shutdown()
        await self.voice.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        # Messages waiting for storage room stay unhandled: once disconnected, their (never
        # sent) acknowledgement leaves them with the broker, which delivers them again.
        self._gate.close()
        await self.link.stop()
        self._gate.let_go()
        await self._gate.stop()
        if self.uplink is not None:
            # After the LAN link: what devices said until now is in the outbox, saved by store.close.
            await self.uplink.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.registry.persist_changes()
        if self._openai is not None:
            await self._openai.close()
        opened = self.store.writer_alive
        await asyncio.to_thread(self.store.close)
        stats = self.store.stats()
        lost = stats.lost_rows + stats.pending_rows + stats.dropped_rows
        if not opened:
            log.info("stopped (the database was not open)")
            return True
        if lost:
            log.error("stopped; %d accepted rows were NOT stored: %d could not be written at stop, %d were "
                      "dropped or refused while running (last error: %s)", lost,
                      stats.lost_rows + stats.pending_rows, stats.dropped_rows, stats.last_error or "none")
            return False
        log.info("stopped; all accepted events are stored")
        return True


def _tls(cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """The port's TLS context, or None for plain HTTP (the files were checked with the config)."""
    return server_context(cert_file, key_file) if cert_file else None


async def run_daemon(config: Config, catalog: Catalog) -> bool:
    """Run until SIGTERM/SIGINT; True when everything accepted was stored."""
    daemon = Daemon(config, catalog)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stored = False
    try:
        await daemon.start()
        await stop.wait()
    finally:
        stored = await daemon.stop()
    return stored


def _site_requests(daemon: Daemon) -> CloudRequestHandler:
    """Cloud commands and chat for this site, through the same command path and agent as HTTP."""
    from deviceagentd.uplink.request_topics import RequestTopics
    from deviceagentd.uplink.requests import CloudRequests

    uplink = daemon.config.uplink
    # check-config has refused templates RequestTopics would refuse.
    topics = RequestTopics(uplink.site_id, command=uplink.topics.commands, command_result=uplink.topics.command_result,
                           chat=uplink.topics.chat, chat_result=uplink.topics.chat_result)
    return CloudRequests(topics, daemon.registry, daemon.commands, daemon.agent, daemon.rejects,
                         command_log=daemon.store.get_command)
