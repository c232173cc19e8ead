"""`agent`: chat turns over `/api/chat` (SSE), each number next to a baseline from the same run.

1. `local` provider, time from request to `event: done` for a one-command turn ("set the
   target temperature to N", `metadata.deviceId` = a simulated thermostat that answers at once)
   and for a state question, sequential on one keep-alive session, interleaved with the same
   command through `POST /api/devices/:id/commands` (the baseline: what the agent adds on top
   of the command path). Target p50 ≤ 20 ms.
2. `openai` provider against the loopback chat-completions double (`tests/openai_double.py`)
   that waits a fixed time-to-first-token before its first content chunk: client-side time to
   the first `event: delta` minus the double's own request → first content chunk. Target
   p50 difference ≤ 5 ms. A second daemon subprocess, configured with `agent.provider=openai`.
3. 50 concurrent chat sessions (local provider: state questions and commands, back to back)
   while one publisher process sends N telemetry messages as fast as it can (the `ingest`
   section's publisher): ingest rate with the chat load / without it, target ≥ 0.8, and no
   non-200 answer or `event: error`. The daemon runs with the product default
   `agent.max_turns_per_s` (nothing here sets it): overlapping turns are paced, so most of a
   turn's time under this load is waiting for its slot.

The shared daemon is used for 1 and 3; it first gets the 1,000 devices of `rss` (the local
engine's per-turn work grows with the registry, so `--only agent` measures the same gateway as
a full run).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from bench_lib import procs
from bench_lib.procs import DaemonClient
from bench_lib.report import Row
from bench_lib.scenarios import (
    DEVICES_PER_PRODUCT,
    KIB,
    MB,
    TELEMETRY,
    publisher_spec,
    run_publisher,
    telemetry_topics,
)
from bench_lib.stats import median, percentile
from deviceagentd.config import AgentConfig
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

if TYPE_CHECKING:
    from bench_lib.scenarios import Bench

# The loopback double lives with the tests; procs put tests/ on sys.path.
from openai_double import DONE, OpenAIDouble, Pause, Raw, Reply, StreamReply, chunk

QUESTION = "what is the current temperature"
TTFT_S = 0.050
LOCAL_P50_TARGET_MS = 20.0
TTFD_OVERHEAD_TARGET_MS = 5.0
INGEST_RATIO_TARGET = 0.8
DIRECT_HEADER = "X-Bench-Direct"
CHAT_DEVICES = 5  # simulated thermostats the concurrent sessions talk to (round robin)


@dataclass(frozen=True)
class AgentSizes:
    turns: int = 200
    warmup: int = 10
    ttfd_requests: int = 100
    clients: int = 50
    min_turns: int = 3  # per concurrent client, at least
    ingest_messages: int = 50_000
    ingest_rounds: int = 5

    @classmethod
    def quick(cls) -> AgentSizes:
        return cls(turns=50, warmup=5, ttfd_requests=30, min_turns=3, ingest_messages=20_000, ingest_rounds=1)


def command_message(i: int) -> tuple[str, float]:
    """A different target every time, so every turn is a real command to the device."""
    value = 18 + i % 10
    return f"set the target temperature to {value}", float(value)


# =========================================================================== one chat turn


@dataclass
class Turn:
    status: int
    total_ms: float = math.nan  # request → end of the stream
    first_delta_ms: float = math.nan  # request → `event: delta`
    done_ms: float = math.nan  # request → `event: done`
    events: list[tuple[str, Any]] = field(default_factory=list)
    body: str = ""  # a non-200 answer

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    @property
    def error(self) -> str | None:
        """Why the turn does not count as answered (None: it does)."""
        if self.status != 200:
            return f"HTTP {self.status}: {self.body[:200]}"
        failed = [data for name, data in self.events if name == "error"]
        if failed:
            return f"event: error {failed[0]}"
        if not self.names or self.names[-1] != "done":
            return f"the stream ended without done: {self.names}"
        return None

    def results(self, tool: str) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == "tool_result" and data.get("name") == tool]


async def chat_turn(session: aiohttp.ClientSession, base_url: str, message: str, *, session_id: str | None = None,
                    device_id: str | None = None) -> Turn:
    """POST /api/chat and read the event stream line by line, timing the events as they arrive."""
    body: dict[str, Any] = {"message": message, "stream": True}
    if session_id:
        body["sessionId"] = session_id
    if device_id:
        body["metadata"] = {"deviceId": device_id}
    started = time.perf_counter()
    async with session.post(f"{base_url}/api/chat", json=body, headers={"Accept": "text/event-stream"}) as resp:
        turn = Turn(resp.status)
        if resp.status != 200:
            turn.body = await resp.text()
            return turn
        name = "message"
        async for raw in resp.content:
            line = raw.rstrip(b"\r\n")
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
                if name == "delta" and math.isnan(turn.first_delta_ms):
                    turn.first_delta_ms = (time.perf_counter() - started) * 1000
                elif name == "done":
                    turn.done_ms = (time.perf_counter() - started) * 1000
            elif line.startswith(b"data:"):
                turn.events.append((name, json.loads(line[5:])))
            elif not line:
                name = "message"
    turn.total_ms = (time.perf_counter() - started) * 1000
    return turn


async def start_thermostats(b: Bench, daemon: DaemonClient, ids: list[str]) -> list[SimulatedDevice]:
    """Simulated thermostats (answering commands at once), online in the daemon's registry."""
    spec = b.catalog.products["thermostat"]
    devices = [SimulatedDevice(spec, device_id, SimulatorOptions(url=b.broker.url, heartbeat_s=0, seed=i))
               for i, device_id in enumerate(ids)]
    try:
        for device in devices:
            await device.start()
        deadline = time.monotonic() + 10
        for device_id in ids:
            while not (await daemon.get_json(f"/api/devices/{device_id}"))["online"]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"simulated device {device_id} did not come online")
                await asyncio.sleep(0.02)
    except BaseException:
        await stop_devices(devices)
        raise
    return devices


async def stop_devices(devices: list[SimulatedDevice]) -> None:
    for device in devices:
        await device.stop()


# =========================================================================== the section


async def agent(b: Bench) -> None:
    sizes = AgentSizes.quick() if b.report.mode == "quick" else AgentSizes()
    daemon = await b.ensure_thermostats()
    # The gateway of the other sections: the 1,000 devices of `rss` too.
    products = sorted(b.catalog.products)
    await b.register({p: [f"bench-{p}-{i:03d}" for i in range(DEVICES_PER_PRODUCT)] for p in products})
    devices = await start_thermostats(b, daemon, [f"bench-agent-{i}" for i in range(CHAT_DEVICES)])
    rss_before = procs.proc_status_kib(daemon.pid, "VmRSS")
    try:
        rss_loaded = await local_turns(b, daemon, sizes, devices[0])
        await openai_ttfd(b, sizes)
        await concurrent_sessions(b, daemon, sizes, devices)
    finally:
        await stop_devices(devices)
    rss_after = procs.proc_status_kib(daemon.pid, "VmRSS")
    registered = (await daemon.scrape()).value("deviceagentd_devices_total")
    b.report.add(Row("daemon RSS after the chat load", rss_after * KIB / MB, "MB", rss_before * KIB / MB,
                     rss_after / rss_before,
                     note=f"VmRSS after parts 1 and 3; {rss_loaded * KIB / MB:.1f} MB right after the first turn "
                     "(the offline engine is loaded then); baseline: the same daemon just before that turn, "
                     f"{registered:,.0f} devices registered; information only"))


# --------------------------------------------------------------------------- 1. local provider


async def local_turns(b: Bench, daemon: DaemonClient, sizes: AgentSizes, device: SimulatedDevice) -> int:
    """Part 1; returns the daemon's VmRSS (KiB) right after its first turn."""
    base = daemon.base_url
    device_id = device.device_id
    first = await chat_turn(b.session, base, QUESTION, device_id=device_id)
    if first.error:
        raise RuntimeError(f"first chat turn failed: {first.error}")
    rss_loaded = procs.proc_status_kib(daemon.pid, "VmRSS")
    # Daemon CPU seconds per kind of request (whole process; /proc ticks of 10 ms, unbiased
    # once summed over many requests).
    cpu = {"command": 0.0, "chat": 0.0, "question": 0.0}
    command_ms: list[float] = []
    chat_ms: list[float] = []
    question_ms: list[float] = []
    chat_delta_ms: list[float] = []
    command_session, question_session = "bench-agent-command", "bench-agent-question"
    tool_names: set[tuple[str, ...]] = set()
    async with b.profile(daemon, "agent_local"):
        for i in range(sizes.warmup + sizes.turns):
            # Interleaved, so a noisy neighbour hits the baseline and the turns alike.
            message, value = command_message(i)
            body = {"command": "set_target_temperature", "params": {"target_temperature": value + 0.5},
                    "timeoutMs": 5000}
            cpu0 = procs.cpu_seconds(daemon.pid)
            started = time.perf_counter()
            async with b.session.post(f"{base}/api/devices/{device_id}/commands", json=body) as resp:
                answer = await resp.json()
                if resp.status != 200 or not answer.get("ok"):
                    raise RuntimeError(f"command {i} failed: HTTP {resp.status} {answer}")
            elapsed = (time.perf_counter() - started) * 1000
            cpu1 = procs.cpu_seconds(daemon.pid)

            turn = await chat_turn(b.session, base, message, session_id=command_session, device_id=device_id)
            sent = turn.results("send_command")
            if turn.error or len(sent) != 1 or not sent[0].get("ok"):
                raise RuntimeError(f"chat command turn {i} did not send one command: {turn.error or turn.events}")
            if device.state.get("target_temperature") != value:
                raise RuntimeError(f"chat turn {i}: the device's target is {device.state.get('target_temperature')}, "
                                   f"not {value}")
            tool_names.add(tuple(d["name"] for n, d in turn.events if n == "tool_call"))
            cpu2 = procs.cpu_seconds(daemon.pid)

            question = await chat_turn(b.session, base, QUESTION, session_id=question_session, device_id=device_id)
            if question.error or not question.results("get_device_state"):
                raise RuntimeError(f"state question {i} was not answered from the device state: "
                                   f"{question.error or question.events}")
            cpu3 = procs.cpu_seconds(daemon.pid)
            if i >= sizes.warmup:
                cpu["command"] += cpu1 - cpu0
                cpu["chat"] += cpu2 - cpu1
                cpu["question"] += cpu3 - cpu2
                command_ms.append(elapsed)
                chat_ms.append(turn.done_ms)
                chat_delta_ms.append(turn.first_delta_ms)
                question_ms.append(question.done_ms)
    n = sizes.turns
    cpu_ms = {kind: seconds / n * 1000 for kind, seconds in cpu.items()}
    p50, p99 = percentile(chat_ms, 50), percentile(chat_ms, 99)
    base50, base99 = percentile(command_ms, 50), percentile(command_ms, 99)
    calls = " / ".join("+".join(names) for names in sorted(tool_names))
    b.report.add(Row(f"chat command turn → done p50 ({n} sequential, local)", p50, "ms", base50, p50 / base50,
                     f"≤ {LOCAL_P50_TARGET_MS:g} ms", p50 <= LOCAL_P50_TARGET_MS,
                     f"POST /api/chat \"set the target temperature to N\" with metadata.deviceId = a simulated "
                     f"thermostat, keep-alive session, one session for all turns (history at its bound); tool calls "
                     f"per turn: {calls}; first `event: delta` p50 {percentile(chat_delta_ms, 50):.2f} ms; baseline: "
                     "the same command through POST /api/devices/:id/commands, interleaved"))
    b.report.add(Row("chat command turn → done p99", p99, "ms", base99, p99 / base99))
    b.report.add(Row("  agent overhead p50(chat) − p50(command API)", p50 - base50, "ms",
                     note="what a turn adds on top of the command path: parsing, planning, history, SSE"))
    b.report.add(Row("  daemon CPU per chat command turn", cpu_ms["chat"], "ms", cpu_ms["command"],
                     cpu_ms["chat"] / cpu_ms["command"] if cpu_ms["command"] else math.nan,
                     note=f"whole process, mean over {n}; state question {cpu_ms['question']:.2f} ms; baseline: "
                     "a command through the API. Close to the turn's wall time: the daemon is on a CPU for all "
                     "of it (waiting on the device is a small part)"))
    q50, q99 = percentile(question_ms, 50), percentile(question_ms, 99)
    b.report.add(Row(f"chat state question → done p50 ({n} sequential, local)", q50, "ms", base50, q50 / base50,
                     note=f"\"{QUESTION}\" (get_device_state, no MQTT round trip); p99 {q99:.2f} ms; baseline: "
                     "the command API as above"))
    b.report.add(Row("  first chat turn of the daemon (loads the offline engine)", first.done_ms, "ms", q50,
                     first.done_ms / q50, note="a state question; baseline: the state question p50 once loaded"))
    return rss_loaded


# --------------------------------------------------------------------------- 2. openai provider, TTFD


class TimedDouble(OpenAIDouble):
    """The test double, also timing its own time-to-first-token: from the handler's start (the
    request has arrived) to the moment the first chunk carrying content was written."""

    def __init__(self) -> None:
        super().__init__()
        self.ttft_ms: list[tuple[float, bool]] = []  # (ms, asked by the bench client directly)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request["bench_t0"] = time.perf_counter()
        return await super()._handle(request)

    def take(self) -> tuple[list[float], list[float]]:
        """(TTFTs of the daemon's requests, TTFTs of the bench client's direct ones), then forget them."""
        daemon = [ms for ms, direct in self.ttft_ms if not direct]
        direct = [ms for ms, direct in self.ttft_ms if direct]
        self.ttft_ms.clear()
        return daemon, direct

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if not isinstance(reply, StreamReply):
            return await super()._reply(request, reply)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        timed = False
        for step in reply.steps:
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, dict):
                await response.write(f"data: {json.dumps(step, ensure_ascii=False)}\n\n".encode())
                if not timed and any(c.get("delta", {}).get("content") for c in step.get("choices", ())):
                    elapsed = (time.perf_counter() - request["bench_t0"]) * 1000
                    self.ttft_ms.append((elapsed, DIRECT_HEADER in request.headers))
                    timed = True
            elif isinstance(step, Raw):
                await response.write(step.text.encode())
            else:
                raise NotImplementedError(f"the timed double does not play {step!r}")
        await response.write_eof()
        return response


def ttft_reply() -> StreamReply:
    """Headers at once, then TTFT_S of "thinking", then the answer in three chunks."""
    return StreamReply([Pause(TTFT_S), chunk({"role": "assistant", "content": "It is "}), chunk({"content": "21.5 "}),
                        chunk({"content": "°C."}), chunk({}, "stop"), DONE])


async def direct_ttfd(session: aiohttp.ClientSession, url: str) -> float:
    """Bench client → double directly: request → first content chunk, ms (the floor without the daemon)."""
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    started = time.perf_counter()
    async with session.post(url, json=body, headers={DIRECT_HEADER: "1"}) as resp:
        async for raw in resp.content:
            if raw.startswith(b"data:") and b'"content"' in raw:
                elapsed = (time.perf_counter() - started) * 1000
                await resp.read()
                return elapsed
    raise RuntimeError("the double sent no content")


async def openai_ttfd(b: Bench, sizes: AgentSizes) -> None:
    async with TimedDouble() as double:
        double.repeat = ttft_reply()
        overrides = {**procs.daemon_overrides(), "agent_provider": "openai", "openai_base_url": double.base_url,
                     "openai_model": "bench", "openai_api_key": "x"}
        state = b.workdir / "agent-openai-state"
        proc = procs.spawn_daemon(b.broker.url, state, **overrides)
        try:
            await asyncio.to_thread(proc.wait_http, 30.0)
            daemon = DaemonClient(proc, b.session)
            direct: list[float] = []
            ttfd: list[float] = []
            done: list[float] = []
            errors: list[str] = []
            warmup = 5
            async with b.profile(daemon, "agent_openai"):
                for i in range(warmup + sizes.ttfd_requests):
                    if i == warmup:
                        double.take()
                    floor = await direct_ttfd(b.session, double.base_url + "/chat/completions")
                    turn = await chat_turn(b.session, daemon.base_url, QUESTION, session_id=f"bench-openai-{i % 10}")
                    if turn.error or math.isnan(turn.first_delta_ms):
                        errors.append(turn.error or f"no delta: {turn.events}")
                        continue
                    if i >= warmup:
                        direct.append(floor)
                        ttfd.append(turn.first_delta_ms)
                        done.append(turn.done_ms)
        finally:
            await asyncio.to_thread(proc.terminate, signal.SIGTERM)
        if errors or double.problems:
            raise RuntimeError(f"openai turns failed: {errors[:3]} {double.problems[:3]}")
    server, direct_server = double.take()
    p50, server50 = percentile(ttfd, 50), percentile(server, 50)
    overhead = p50 - server50
    b.report.add(Row(f"chat time to first delta p50, openai provider ({len(ttfd)} sequential)", p50, "ms",
                     server50, p50 / server50,
                     note=f"POST /api/chat → `event: delta`; the loopback chat-completions double waits "
                     f"{TTFT_S * 1000:.0f} ms before its first content chunk; baseline: the double's own request → "
                     f"first content chunk written (p99 {percentile(server, 99):.2f} ms); "
                     f"p99 {percentile(ttfd, 99):.2f} ms; → done p50 {percentile(done, 50):.2f} ms"))
    b.report.add(Row("  delta overhead p50(client) − p50(model TTFT)", overhead, "ms",
                     percentile(direct, 50) - percentile(direct_server, 50), None,
                     f"≤ {TTFD_OVERHEAD_TARGET_MS:g} ms", overhead <= TTFD_OVERHEAD_TARGET_MS,
                     "the daemon's share: our HTTP in, the turn, its request to the model with the tool specs, "
                     "decoding the model's stream, our SSE out; baseline: the bench client asking the double "
                     "directly, the same difference"))


# --------------------------------------------------------------------------- 3. concurrent sessions


@dataclass
class ChatLoad:
    clients: int
    turns_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    per_client: list[int] = field(default_factory=list)
    commands_sent: int = 0
    warm_clients: int = 0  # clients that have finished their first turn
    warm: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.per_client = [0] * self.clients


async def chat_client(session: aiohttp.ClientSession, base_url: str, k: int, device_id: str, min_turns: int,
                      load: ChatLoad) -> None:
    """One session: a state question, a command, a state question, ... back to back, until
    told to stop and at least `min_turns` are done."""
    turns = 0
    while turns < min_turns or not load.stop.is_set():
        message = command_message(turns + k)[0] if turns % 3 == 1 else QUESTION
        try:
            turn = await chat_turn(session, base_url, message, session_id=f"bench-load-{k:02d}", device_id=device_id)
        except (aiohttp.ClientError, TimeoutError) as exc:
            load.errors.append(f"client {k}: {exc!r}")
        else:
            if turn.error:
                load.errors.append(f"client {k}: {turn.error}")
            else:
                load.turns_ms.append(turn.done_ms)
                load.commands_sent += sum(1 for r in turn.results("send_command") if r.get("ok"))
        turns += 1
        load.per_client[k] = turns
        if turns == 1:
            load.warm_clients += 1
            if load.warm_clients == load.clients:
                load.warm.set()


@dataclass
class IngestRun:
    rate: float
    received: int
    seconds: float
    daemon_cpu: float  # share of one CPU the daemon used during the run
    bench_cpu: float  # the same for this process (chat clients, simulated devices)


async def ingest_run(b: Bench, daemon: DaemonClient, n: int, sizes: AgentSizes,
                     devices: list[SimulatedDevice] | None) -> tuple[IngestRun, ChatLoad | None]:
    """N telemetry messages as fast as the publisher goes (the `ingest` section's), with or
    without the chat load running all the time."""
    before = await daemon.counter(TELEMETRY, kind="telemetry")
    load: ChatLoad | None = None
    tasks: list[asyncio.Task[None]] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=sizes.clients + 10))
    marks: dict[str, float] = {}

    async def start_chat() -> None:
        nonlocal load
        if devices is None:
            return
        load = ChatLoad(sizes.clients)
        load.started = time.monotonic()
        tasks.extend(asyncio.create_task(chat_client(session, daemon.base_url, k, devices[k % len(devices)].device_id,
                                                     sizes.min_turns, load))
                     for k in range(sizes.clients))
        # Every client has finished a turn: the load is in its steady state.
        await asyncio.wait_for(load.warm.wait(), 30.0)

    async def sample_cpu() -> None:  # right before the publisher's first message
        await start_chat()
        marks["daemon_cpu"] = procs.cpu_seconds(daemon.pid)
        marks["bench_cpu"] = time.process_time()
        marks["t"] = time.monotonic()

    try:
        async with b.profile(daemon, "agent_concurrent") if devices else contextlib.nullcontext():
            pub = await run_publisher(publisher_spec(b, "agent-ingest", "telemetry", telemetry_topics(), count=n),
                                      before_go=sample_cpu)
            done_at, value = await daemon.wait_counter(TELEMETRY, before + n, labels={"kind": "telemetry"})
            cpu = procs.cpu_seconds(daemon.pid) - marks["daemon_cpu"]
            bench_cpu = time.process_time() - marks["bench_cpu"]
            wall = time.monotonic() - marks["t"]
            if load is not None:
                load.stop.set()
            await asyncio.gather(*tasks)
        if load is not None:
            load.ended = time.monotonic()
        sent = await pub.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
    received = int(value - before)
    seconds = done_at - sent["t_first"]
    return IngestRun(received / seconds, received, seconds, cpu / wall, bench_cpu / wall), load


async def concurrent_sessions(b: Bench, daemon: DaemonClient, sizes: AgentSizes,
                              devices: list[SimulatedDevice]) -> None:
    n = sizes.ingest_messages
    alone: list[IngestRun] = []
    loaded: list[IngestRun] = []
    loads: list[ChatLoad] = []
    # Without, with, without, ...: each run with chat is compared with the mean of the runs
    # without it just before and just after, so a neighbour's load that comes or goes during the
    # round does not land on one side only.
    alone.append((await ingest_run(b, daemon, n, sizes, None))[0])
    for _ in range(sizes.ingest_rounds):
        run, load = await ingest_run(b, daemon, n, sizes, devices)
        assert load is not None
        loaded.append(run)
        loads.append(load)
        alone.append((await ingest_run(b, daemon, n, sizes, None))[0])
    around = [(before.rate + after.rate) / 2 for before, after in itertools.pairwise(alone)]
    ratios = [d.rate / a for d, a in zip(loaded, around, strict=True)]
    ratio = median(ratios)
    rate, base = median([r.rate for r in loaded]), median([r.rate for r in alone])
    turns = [t for load in loads for t in load.turns_ms]
    errors = [e for load in loads for e in load.errors]
    per_client = [t for load in loads for t in load.per_client]
    turn_rate = median([len(load.turns_ms) / (load.ended - load.started) for load in loads])
    pace = AgentConfig().max_turns_per_s  # the daemon is started without overriding it
    rounds = sizes.ingest_rounds
    b.report.add(Row(f"telemetry ingest rate during {sizes.clients} chat sessions ({n:,} msgs, median of {rounds})",
                     rate, "msg/s", base, ratio, f"ratio ≥ {INGEST_RATIO_TARGET:g}", ratio >= INGEST_RATIO_TARGET,
                     "the ingest section's publisher, as fast as it goes, while every client runs turns back to back "
                     "(from before the first message until the last is counted); baseline: the same without chat; "
                     "per round with / without: " + ", ".join(
                         f"{d.rate:,.0f} / {a:,.0f} ({d.rate / a:.2f})"
                         for d, a in zip(loaded, around, strict=True)) + " msg/s (without: the mean of the runs "
                     "just before and after); daemon on a CPU "
                     f"{median([r.daemon_cpu for r in loaded]):.0%} with chat vs "
                     f"{median([r.daemon_cpu for r in alone]):.0%} without; the bench process (chat clients, "
                     f"simulated devices) {median([r.bench_cpu for r in loaded]):.0%} with chat"))
    b.report.add(Row(f"  chat turns with errors ({sizes.clients} concurrent sessions)", len(errors), "count",
                     target="= 0", ok=not errors,
                     note=f"non-200 answers or `event: error`, of {len(turns) + len(errors):,} turns "
                     f"({min(per_client, default=0)}–{max(per_client, default=0)} per client per round, "
                     f"{sum(load.commands_sent for load in loads):,} commands sent to {len(devices)} simulated "
                     f"thermostats)" + (f"; first: {errors[0]}" if errors else "")))
    b.report.add(Row("  chat turn → done under that load, p50", percentile(turns, 50), "ms",
                     note=f"p99 {percentile(turns, 99):.1f} ms; {turn_rate:,.0f} turns/s in all; state questions, "
                     f"every third turn a command; agent.max_turns_per_s = {pace:g} (the product default"
                     + (f"; a turn mostly waits for its slot, {sizes.clients} clients at {pace:g} turns/s)" if pace > 0
                        else ", no pacing)")))
