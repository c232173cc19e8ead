"""A replay of stock XiaoZhi firmware on the voice WebSocket, written field by field from its
code (78/xiaozhi-esp32 @ 48142026b50b, the revision read for this), not from ours:

- `main/protocols/websocket_protocol.cc` OpenAudioChannel: the headers (Authorization only with a
  token, "Bearer " added when it has no space; Protocol-Version = version_, 1 unless the OTA answer
  set websocket.version; Device-Id = MAC; Client-Id = UUID), GetHelloMessage (cJSON, unformatted,
  keys in that order, `features` with mcp and glyph_push from protocol.cc
  AddTextFontCapabilities), the 10 s wait for a server hello whose transport is "websocket"
  (ParseServerHello reads session_id, audio_params.sample_rate and frame_duration; defaults 24000
  and 60 from protocol.h), SendAudio's three framings (v2 `>HHIII`, v3 `>BBH`, v1 bare);
- `main/protocols/protocol.cc`: SendWakeWordDetected, SendStartListening, SendStopListening,
  SendAbortSpeaking, SendMcpMessage — JSON built by string concatenation, session_id first;
- `main/audio/audio_service.h` AS_OPUS_ENC_CONFIG: Opus 16 kHz mono, 60 ms, application AUDIO,
  complexity 0, DTX on, VBR; the decoder opened at the server hello's rate and frame duration
  with a buffer of exactly rate/1000*duration samples (SetDecodeSampleRate), so a longer packet
  fails to decode;
- `main/application.cc` OnIncomingJson/OnIncomingAudio: audio is played only in the Speaking
  state, entered on `tts start` and left on `tts stop`; stt, llm, mcp, system, alert (needs
  string status, message and emotion); anything else is "Unknown message type";
- `main/mcp_server.cc` ParseMessage/GetToolsList/DoToolCall and `mcp_server.h` McpTool::to_json
  and Call: the device's MCP server (8000-byte pages, nextCursor = the next tool's name, user-only
  tools with annotations.audience ["user"], errors as {"message"} without a code).
"""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import opuslib_next

OPUS_FRAME_DURATION_MS = 60
SAMPLE_RATE = 16000
MAX_PAYLOAD_SIZE = 8000  # mcp_server.cc GetToolsList


@dataclass
class Property:
    name: str
    type: str  # "boolean" | "integer" | "string"
    min: int | None = None
    max: int | None = None

    def to_json(self) -> dict[str, Any]:  # mcp_server.h Property::to_json
        out: dict[str, Any] = {"type": self.type}
        if self.type == "integer" and self.min is not None:
            out["minimum"] = self.min
        if self.type == "integer" and self.max is not None:
            out["maximum"] = self.max
        return out


@dataclass
class Tool:
    name: str
    description: str
    properties: list[Property] = field(default_factory=list)
    user_only: bool = False

    def to_json(self) -> str:  # McpTool::to_json (every property without a default is required)
        schema: dict[str, Any] = {"type": "object", "properties": {p.name: p.to_json() for p in self.properties}}
        if self.properties:
            schema["required"] = [p.name for p in self.properties]
        tool: dict[str, Any] = {"name": self.name, "description": self.description, "inputSchema": schema}
        if self.user_only:
            tool["annotations"] = {"audience": ["user"]}
        return json.dumps(tool, separators=(",", ":"), ensure_ascii=False)


def common_tools() -> list[Tool]:
    """McpServer::AddCommonTools and AddUserOnlyTools of a board with a backlight and a theme."""
    return [
        Tool("self.get_device_status", "Provides the real-time information of the device, including the current "
             "status of the audio speaker, screen, battery, network, etc."),
        Tool("self.audio_speaker.set_volume", "Set the volume of the audio speaker. If the current volume is unknown, "
             "you must call `self.get_device_status` tool first and then call this tool.",
             [Property("volume", "integer", 0, 100)]),
        Tool("self.screen.set_brightness", "Set the brightness of the screen.",
             [Property("brightness", "integer", 0, 100)]),
        Tool("self.screen.set_theme", "Set the theme of the screen. The theme can be `light` or `dark`.",
             [Property("theme", "string")]),
        Tool("self.get_system_info", "Get the system information", user_only=True),
        Tool("self.reboot", "Reboot the system", user_only=True),
    ]


@dataclass
class McpDevice:
    """mcp_server.cc, with knobs for the bad-input tests."""

    tools: list[Tool] = field(default_factory=common_tools)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    volume: int = 50
    # Misbehaviour: "silent" never answers tools/call, "not_jsonrpc" answers with jsonrpc 1.0,
    # "error" answers every call with an error; None behaves.
    on_call: str | None = None
    silent_initialize: bool = False  # never answer initialize
    call_started: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def handle(self, payload: Any) -> str | None:
        """ParseMessage: the reply payload (a JSON string), or None."""
        if not isinstance(payload, dict) or payload.get("jsonrpc") != "2.0":
            return None
        method = payload.get("method")
        if not isinstance(method, str) or method.startswith("notifications"):
            return None
        params = payload.get("params")
        if params is not None and not isinstance(params, dict):
            return None
        request_id = payload.get("id")
        if not isinstance(request_id, int | float) or isinstance(request_id, bool):
            return None
        self.requests.append(payload)
        rid = int(request_id)
        if method == "initialize":
            if self.silent_initialize:
                return None
            return self._result(rid, '{"protocolVersion":"2024-11-05","capabilities":{"tools":{}},'
                                     '"serverInfo":{"name":"bread-compact-wifi","version":"2.0.3"}}')
        if method == "tools/list":
            cursor = params.get("cursor", "") if params else ""
            with_user = params.get("withUserTools") is True if params else False
            return self._tools_list(rid, cursor if isinstance(cursor, str) else "", with_user)
        if method == "tools/call":
            if not isinstance(params, dict):
                return self._error(rid, "Missing params")
            name = params.get("name")
            if not isinstance(name, str):
                return self._error(rid, "Missing name")
            arguments = params.get("arguments")
            if arguments is not None and not isinstance(arguments, dict):
                return self._error(rid, "Invalid arguments")
            return self._call(rid, name, arguments or {})
        return self._error(rid, "Method not implemented: " + method)

    def _result(self, rid: int, result: str) -> str:
        return '{"jsonrpc":"2.0","id":' + str(rid) + ',"result":' + result + "}"

    def _error(self, rid: int, message: str) -> str:
        return '{"jsonrpc":"2.0","id":' + str(rid) + ',"error":{"message":"' + message + '"}}'

    def _tools_list(self, rid: int, cursor: str, with_user: bool) -> str:
        out = '{"tools":['
        found = not cursor
        next_cursor = ""
        for tool in self.tools:
            if not found:
                if tool.name != cursor:
                    continue
                found = True
            if not with_user and tool.user_only:
                continue
            tool_json = tool.to_json() + ","
            if len(out) + len(tool_json) + 30 > MAX_PAYLOAD_SIZE:
                next_cursor = tool.name
                break
            out += tool_json
        out = out.removesuffix(",")
        out += "]}" if not next_cursor else '],"nextCursor":"' + next_cursor + '"}'
        return self._result(rid, out)

    def _call(self, rid: int, name: str, arguments: dict[str, Any]) -> str | None:
        tool = next((t for t in self.tools if t.name == name), None)
        if tool is None:
            return self._error(rid, "Unknown tool: " + name)
        values: dict[str, Any] = {}
        for prop in tool.properties:
            value = arguments.get(prop.name)
            ok = ((prop.type == "boolean" and isinstance(value, bool))
                  or (prop.type == "integer" and isinstance(value, int | float) and not isinstance(value, bool))
                  or (prop.type == "string" and isinstance(value, str)))
            if not ok:
                return self._error(rid, "Missing valid argument: " + prop.name)
            values[prop.name] = int(value) if prop.type == "integer" else value
        self.calls.append((name, values))
        self.call_started.set()
        if self.on_call == "silent":
            return None
        if self.on_call == "not_jsonrpc":
            return '{"jsonrpc":"1.0","id":' + str(rid) + ',"answer":true}'
        if self.on_call == "error":
            return self._error(rid, "Audio codec is busy")
        if name == "self.audio_speaker.set_volume":
            self.volume = values["volume"]
        text = json.dumps({"audio_speaker": {"volume": self.volume}}) if name == "self.get_device_status" else "true"
        return self._result(rid, json.dumps({"content": [{"type": "text", "text": text}], "isError": False},
                                            separators=(",", ":")))


class FirmwareDevice:
    """One firmware connection (WebsocketProtocol + the Application's incoming handlers)."""

    def __init__(self, url: str, *, version: int = 1, token: str = "", mac: str = "a0:85:e3:11:22:33",
                 mcp: McpDevice | None = None) -> None:
        self.url = url
        self.version = version
        self.token = token
        self.mac = mac
        self.client_uuid = str(uuid.uuid4())
        self.mcp = mcp if mcp is not None else McpDevice()
        self.session_id = ""
        self.server_sample_rate = 24000  # protocol.h defaults
        self.server_frame_duration = 60
        self.speaking = False
        self.json: list[dict[str, Any]] = []  # every JSON message but hello, in order
        self.received: list[dict[str, Any]] = []  # every JSON message, hello included
        self.sent: list[str] = []  # every text message sent
        self.unknown: list[str] = []  # types application.cc would log as unknown
        self.played: list[bytes] = []  # decoded PCM per packet while Speaking
        self.dropped_not_speaking = 0
        self.decode_failures = 0
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._hello = asyncio.Event()
        self._decoder: Any = None
        self._decoder_key: tuple[int, int] | None = None
        self._encoder = opuslib_next.Encoder(SAMPLE_RATE, 1, "audio")
        self._encoder.complexity = 0
        self._encoder.dtx = 1
        self._encoder.vbr = 1

    # ---------------------------------------------------------------- OpenAudioChannel

    async def open(self) -> bool:
        headers = {}
        if self.token:
            headers["Authorization"] = self.token if " " in self.token else "Bearer " + self.token
        headers["Protocol-Version"] = str(self.version)
        headers["Device-Id"] = self.mac
        headers["Client-Id"] = self.client_uuid
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self.url, headers=headers)
        self._reader = asyncio.create_task(self._read())
        await self.send_text(self.hello_message())
        try:
            await asyncio.wait_for(self._hello.wait(), 10)
        except TimeoutError:
            return False  # "Failed to receive server hello"
        return True

    def hello_message(self) -> str:
        return ('{"type":"hello","version":' + str(self.version) + ',"features":{"mcp":true,"glyph_push":false},'
                '"transport":"websocket","audio_params":{"format":"opus","sample_rate":16000,"channels":1,'
                '"frame_duration":' + str(OPUS_FRAME_DURATION_MS) + "}}")

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    async def send_text(self, text: str) -> None:
        assert self._ws is not None
        self.sent.append(text)
        await self._ws.send_str(text)

    async def send_packet(self, payload: bytes, timestamp: int = 0) -> None:
        assert self._ws is not None
        if self.version == 2:
            data = struct.pack(">HHIII", 2, 0, 0, timestamp, len(payload)) + payload
        elif self.version == 3:
            data = struct.pack(">BBH", 0, 0, len(payload)) + payload
        else:
            data = payload
        await self._ws.send_bytes(data)

    # ---------------------------------------------------------------- protocol.cc

    async def wake_word_detected(self, wake_word: str) -> None:
        await self.send_text('{"session_id":"' + self.session_id + '","type":"listen","state":"detect","text":"'
                             + wake_word + '"}')

    async def start_listening(self, mode: str = "auto") -> None:
        await self.send_text('{"session_id":"' + self.session_id + '","type":"listen","state":"start","mode":"'
                             + mode + '"}')

    async def stop_listening(self) -> None:
        await self.send_text('{"session_id":"' + self.session_id + '","type":"listen","state":"stop"}')

    async def abort_speaking(self, wake_word: bool = False) -> None:
        message = '{"session_id":"' + self.session_id + '","type":"abort"'
        if wake_word:
            message += ',"reason":"wake_word_detected"'
        await self.send_text(message + "}")

    async def send_mcp(self, payload: str) -> None:
        await self.send_text('{"session_id":"' + self.session_id + '","type":"mcp","payload":' + payload + "}")

    # ---------------------------------------------------------------- audio out (the microphone)

    def encode(self, pcm16k: bytes) -> list[bytes]:
        """60 ms Opus packets of 16 kHz PCM (DTX: silence becomes packets of a few bytes)."""
        size = SAMPLE_RATE * OPUS_FRAME_DURATION_MS // 1000 * 2
        pcm16k += bytes(-len(pcm16k) % size)
        return [self._encoder.encode(pcm16k[i:i + size], size // 2) for i in range(0, len(pcm16k), size)]

    async def speak(self, pcm16k: bytes, pace_s: float = 0.0) -> list[bytes]:
        packets = self.encode(pcm16k)
        for index, packet in enumerate(packets):
            await self.send_packet(packet, timestamp=index * OPUS_FRAME_DURATION_MS)
            if pace_s:
                await asyncio.sleep(pace_s)
        return packets

    # ---------------------------------------------------------------- incoming

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    self._on_audio(msg.data)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    await self._on_json(msg.data)
                async with self._changed:
                    self._changed.notify_all()
        finally:
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    def _payload(self, data: bytes) -> bytes:
        if self.version == 2:
            _version, _type, _reserved, _timestamp, size = struct.unpack(">HHIII", data[:16])
            return data[16:16 + size]
        if self.version == 3:
            _type, _reserved, size = struct.unpack(">BBH", data[:4])
            return data[4:4 + size]
        return data

    def _on_audio(self, data: bytes) -> None:
        if not self.speaking:  # OnIncomingAudio: only in kDeviceStateSpeaking
            self.dropped_not_speaking += 1
            return
        key = (self.server_sample_rate, self.server_frame_duration)
        if self._decoder_key != key:
            self._decoder = opuslib_next.Decoder(self.server_sample_rate, 1)
            self._decoder_key = key
        frame_size = self.server_sample_rate // 1000 * self.server_frame_duration
        try:
            self.played.append(self._decoder.decode(self._payload(data), frame_size))
        except opuslib_next.OpusError:
            self.decode_failures += 1

    async def _on_json(self, text: str) -> None:
        root = json.loads(text)
        self.received.append(root)
        kind = root.get("type")
        if kind == "hello":
            if root.get("transport") != "websocket":
                return  # "Unsupported transport"
            if isinstance(root.get("session_id"), str):
                self.session_id = root["session_id"]
            params = root.get("audio_params")
            if isinstance(params, dict):
                if isinstance(params.get("sample_rate"), int):
                    self.server_sample_rate = params["sample_rate"]
                if isinstance(params.get("frame_duration"), int):
                    self.server_frame_duration = params["frame_duration"]
            self._hello.set()
            return
        self.json.append(root)
        if kind == "tts":
            if root.get("state") == "start":
                self.speaking = True
            elif root.get("state") == "stop":
                self.speaking = False
        elif kind == "mcp":
            reply = self.mcp.handle(root.get("payload"))
            if reply is not None:
                await self.send_mcp(reply)
        elif kind == "alert":
            assert all(isinstance(root.get(k), str) for k in ("status", "message", "emotion")), root
        elif kind not in ("stt", "llm", "system", "custom"):
            self.unknown.append(str(kind))

    # ---------------------------------------------------------------- waiting

    def messages(self, kind: str, after: int = 0) -> list[dict[str, Any]]:
        return [m for m in self.json[after:] if m.get("type") == kind]

    async def wait_for(self, kind: str, after: int = 0, timeout: float = 15.0, **fields: Any) -> int:
        def index() -> int | None:
            for i in range(after, len(self.json)):
                m = self.json[i]
                if m.get("type") == kind and all(m.get(k) == v for k, v in fields.items()):
                    return i
            return None

        async def found() -> int:
            async with self._changed:
                while (i := index()) is None:
                    if self.closed.is_set():
                        raise AssertionError(f"closed before {kind} {fields}: {self.json[after:]}")
                    await self._changed.wait()
                return i

        try:
            return await asyncio.wait_for(found(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {kind} {fields} within {timeout} s; got {self.json[after:]}") from None
