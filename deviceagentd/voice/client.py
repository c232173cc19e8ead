"""`scripts/voice-client`: talk to the gateway's /ws/voice like a speaker would.

    scripts/voice-client --url ws://127.0.0.1:3001/ws/voice --say "what is the current temperature" \\
        --out reply.wav [--lang en|zh] [--session demo-session] [--device-id thermostat-001 \\
        --product-id thermostat] [--provider aliyun|openai|offline] [--token T] [--protocol 3]
    scripts/voice-client --wav question.wav --out reply.wav

The speech (a WAV file at any rate, mono or stereo 16-bit, or text spoken by espeak-ng) is sent
as 16 kHz PCM in 60 ms frames paced in real time, followed in auto mode by silence until the
gateway has heard the end of speech (at most `--tail` seconds); in manual mode by `stop`. The
ASR partials, the final transcript and the reply are printed; the reply audio is saved as a WAV
at the rate the gateway's hello announced — only if it sent any audio (an error is printed, and
no empty file is written and reported as saved).

Exit status: 0 when a reply was received without any error; 1 when the gateway reported an
error, recognised nothing, closed the connection or did not answer in time; 2 for bad input
(arguments, an unreadable WAV, espeak-ng missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from deviceagentd.voice.audio import SAMPLE_RATE, Resampler
from deviceagentd.voice.protocol import BinaryCodec, FrameType, ProtocolError

# American English: the gateway's offline recogniser has an American English acoustic model.
ESPEAK_VOICES = {"en": "en-us", "zh": "cmn"}
HELLO_TIMEOUT_S = 10.0
# After an empty transcript or an error, how long to wait for the gateway to say something about it.
NOTHING_HEARD_GRACE_S = 1.5


class ClientError(Exception):
    """A failure to report in one sentence; `status` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Options:
    url: str
    pcm: bytes  # 16 kHz s16le mono: what is said
    session_id: str | None = None
    device_id: str | None = None
    product_id: str | None = None
    provider: str | None = None
    language: str | None = None
    token: str | None = None
    protocol: int = 3
    mode: str = "auto"
    frame_ms: int = 60
    tail_s: float = 3.0  # auto mode: the longest silence sent after the speech
    timeout_s: float = 60.0
    realtime: bool = True  # pace the frames in real time (tests may send faster)


@dataclass
class Result:
    session_id: str = ""
    provider: str = ""
    partials: list[str] = field(default_factory=list)
    transcript: str | None = None
    reply: str | None = None
    sentences: list[str] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    frame_sizes: list[int] = field(default_factory=list)
    sample_rate: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = False  # tts_complete arrived


# ------------------------------------------------------------------------------ input audio


def read_wav(path: Path) -> bytes:
    """A 16-bit PCM WAV (any rate, mono or stereo) as 16 kHz mono s16le."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise ClientError(f"{path}: no such file", 2) from None
    except (wave.Error, EOFError, OSError) as exc:
        raise ClientError(f"{path}: not a PCM WAV file ({exc})", 2) from None
    if width != 2:
        raise ClientError(f"{path}: {8 * width}-bit samples; convert to 16-bit PCM", 2)
    samples = np.frombuffer(raw, dtype="<i2")
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)
        samples = np.rint(samples).astype(np.int16)
    if not len(samples):
        raise ClientError(f"{path}: the file holds no audio", 2)
    resampler = Resampler(rate, SAMPLE_RATE)
    return resampler.push(samples.astype("<i2").tobytes()) + resampler.flush()


def espeak_pcm(text: str, language: str) -> bytes:
    """`text` spoken by espeak-ng, as 16 kHz mono s16le."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise ClientError("espeak-ng is not installed (apt-get install espeak-ng); use --wav instead", 2)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "say.wav"
        try:
            subprocess.run([binary, "-v", ESPEAK_VOICES.get(language, language), "-w", str(out), "--", text],
                           check=True, capture_output=True, timeout=60)
        except subprocess.CalledProcessError as exc:
            message = exc.stderr.decode("utf-8", "replace").strip() or f"exit {exc.returncode}"
            raise ClientError(f"espeak-ng failed: {message}", 2) from None
        except subprocess.TimeoutExpired:
            raise ClientError("espeak-ng did not finish within 60 s", 2) from None
        return read_wav(out)


def write_wav(path: Path, pcm: bytes, sample_rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


# ------------------------------------------------------------------------------ the session


class Conversation:
    """One connection: hello, listen, the speech, then everything the gateway sends until the
    reply is complete."""

    def __init__(self, options: Options, ws: aiohttp.ClientWebSocketResponse, echo: bool) -> None:
        self.options = options
        self.ws = ws
        self.echo = echo
        self.codec = BinaryCodec(options.protocol)
        self.result = Result()
        self.heard = asyncio.Event()  # the utterance is over (final transcript or error)
        self.done = asyncio.Event()  # nothing more to wait for
        self._grace: asyncio.TimerHandle | None = None  # ends the wait when nothing more comes

    def say(self, text: str, error: bool = False) -> None:
        if self.echo:
            print(text, file=sys.stderr if error else sys.stdout, flush=True)

    async def run(self) -> Result:
        await self.hello()
        receiver = asyncio.create_task(self.receive())
        finished = asyncio.create_task(self.done.wait())
        try:
            await self.send_json({"type": "listen", "state": "start", "mode": self.options.mode})
            await self.speak()
            await asyncio.wait({receiver, finished}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done():
                receiver.result()
        finally:
            for task in (receiver, finished):
                task.cancel()
            await asyncio.gather(receiver, finished, return_exceptions=True)
        if not self.ws.closed:
            await self.send_json({"type": "goodbye"})
        return self.result

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message, ensure_ascii=False))

    async def hello(self) -> None:
        o = self.options
        hello: dict[str, Any] = {
            "type": "hello",
            "version": o.protocol,
            "transport": "websocket",
            "audio_params": {"format": "pcm", "sample_rate": SAMPLE_RATE, "channels": 1, "frame_duration": o.frame_ms},
        }
        for key, value in (("sessionId", o.session_id), ("productId", o.product_id), ("deviceId", o.device_id),
                           ("provider", o.provider), ("language", o.language)):
            if value:
                hello[key] = value
        await self.send_json(hello)
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                while True:
                    msg = await self.ws.receive()
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        raise ClientError(self.closed_message("before answering hello"))
                    data = json.loads(msg.data)
                    if data.get("type") == "error":
                        raise ClientError(f"the gateway refused hello: [{data.get('code')}] {data.get('message')}")
                    if data.get("type") == "hello":
                        break
        except TimeoutError:
            raise ClientError(f"no hello from the gateway within {HELLO_TIMEOUT_S:g} s") from None
        params = data.get("audio_params") or {}
        self.result.session_id = str(data.get("sessionId") or data.get("session_id") or "")
        self.result.provider = str(data.get("provider") or "")
        self.result.sample_rate = int(params.get("sample_rate") or 24000)
        self.say(f"connected: session {self.result.session_id}, provider {self.result.provider or '?'}, "
                 f"reply audio {self.result.sample_rate} Hz")

    def closed_message(self, when: str) -> str:
        code = self.ws.close_code
        reason = f" (close code {code})" if code is not None else ""
        return f"the gateway closed the connection {when}{reason}"

    async def speak(self) -> None:
        o = self.options
        frame_bytes = SAMPLE_RATE * o.frame_ms // 1000 * 2
        frames = [o.pcm[i : i + frame_bytes] for i in range(0, len(o.pcm), frame_bytes)]
        if frames and len(frames[-1]) < frame_bytes:
            frames[-1] += bytes(frame_bytes - len(frames[-1]))
        loop = asyncio.get_running_loop()
        start = loop.time()
        frame_s = o.frame_ms / 1000

        async def send(index: int, frame: bytes) -> None:
            if o.realtime:
                delay = start + index * frame_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.ws.send_bytes(self.codec.audio(frame))

        for index, frame in enumerate(frames):
            if self.heard.is_set() or self.ws.closed:
                return
            await send(index, frame)
        if o.mode == "manual":
            await self.send_json({"type": "stop"})
            return
        silence = bytes(frame_bytes)
        for extra in range(round(o.tail_s / frame_s)):
            if self.heard.is_set() or self.ws.closed:
                return
            await send(len(frames) + extra, silence)

    async def receive(self) -> None:
        result = self.result
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                try:
                    frame = self.codec.decode(msg.data)
                except ProtocolError as exc:
                    raise ClientError(f"the gateway sent a bad audio frame: {exc}") from None
                if frame.type is FrameType.AUDIO:
                    result.audio += frame.payload
                    result.frame_sizes.append(len(frame.payload))
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                if not self.done.is_set():
                    raise ClientError(self.closed_message("before the reply was complete"))
                return
            self.on_message(json.loads(msg.data))
            if self.done.is_set():
                return

    def on_message(self, data: dict[str, Any]) -> None:
        result = self.result
        kind = data.get("type")
        if kind == "asr":
            text = str(data.get("text", ""))
            if not data.get("definite"):
                result.partials.append(text)
                self.say(f"asr (partial): {text}")
                return
            result.transcript = text
            self.heard.set()
            if text:
                self.say(f"heard: {text}")
            else:
                self.say("the gateway recognised nothing in the speech", error=True)
                # It may still say so ("Sorry, I didn't catch that."); if not, we are done.
                self._grace = asyncio.get_running_loop().call_later(NOTHING_HEARD_GRACE_S, self.done.set)
        elif kind == "agent_reply" and data.get("streaming") is False:
            result.reply = str(data.get("text", ""))
            self.say(f"reply: {result.reply}")
            self._keep_listening()
        elif kind == "tts" and data.get("state") == "sentence_start":
            result.sentences.append(str(data.get("text", "")))
            self._keep_listening()
        elif kind == "tts_complete":
            result.complete = True
            self.done.set()
        elif kind == "tts" and data.get("state") == "stop" and not result.transcript:
            # The end of what the gateway said instead of a reply (an apology, an explanation).
            self.done.set()
        elif kind == "error":
            code, message = str(data.get("code")), str(data.get("message"))
            result.errors.append((code, message))
            self.say(f"error [{code}]: {message}", error=True)
            if result.transcript is None or not result.transcript:
                # Before a turn began, an error ends the utterance; the gateway may still explain
                # it aloud (an apology), so wait a moment for that.
                self.heard.set()
                self._keep_listening()
                self._grace = asyncio.get_running_loop().call_later(NOTHING_HEARD_GRACE_S, self.done.set)

    def _keep_listening(self) -> None:
        """The gateway is answering after all: wait for its tts_complete (or tts stop)."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None


async def converse(options: Options, echo: bool = False) -> Result:
    """Connect, speak, and collect the answer. Raises ClientError."""
    headers = {"Protocol-Version": str(options.protocol), "Device-Id": options.device_id or "voice-client",
               "Client-Id": "voice-client"}
    if options.token:
        headers["Authorization"] = f"Bearer {options.token}"
    try:
        async with aiohttp.ClientSession() as http:
            try:
                ws = await http.ws_connect(options.url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401:
                    raise ClientError("the gateway refused the token (HTTP 401): check --token") from None
                raise ClientError(f"{options.url}: the WebSocket upgrade failed (HTTP {exc.status})") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise ClientError(f"cannot connect to {options.url}: {exc}") from None
            async with ws:
                conversation = Conversation(options, ws, echo)
                try:
                    async with asyncio.timeout(options.timeout_s):
                        return await conversation.run()
                except TimeoutError:
                    raise ClientError(f"no complete answer within {options.timeout_s:g} s") from None
                except (aiohttp.ClientError, ConnectionError) as exc:
                    raise ClientError(f"the connection failed: {exc}") from None
    except ValueError as exc:  # a malformed URL, or JSON the gateway should never send
        raise ClientError(str(exc)) from None


# ------------------------------------------------------------------------------ command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="voice-client",
        description="Speak to the gateway's voice WebSocket and save its spoken reply.",
    )
    parser.add_argument("--url", default="ws://127.0.0.1:3001/ws/voice", help="the gateway's /ws/voice URL")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wav", type=Path, help="a 16-bit PCM WAV file to say (any rate, mono or stereo)")
    source.add_argument("--say", help="text to say, spoken by espeak-ng")
    parser.add_argument("--lang", default="en", choices=sorted(ESPEAK_VOICES), help="language of --say (default en)")
    parser.add_argument("--out", type=Path, help="save the reply audio to this WAV file")
    parser.add_argument("--session", help="the agent session (sessionId); default: a new one")
    parser.add_argument("--device-id", help="the device the conversation is about (deviceId)")
    parser.add_argument("--product-id", help="its product (productId)")
    parser.add_argument("--provider", help="speech recogniser: aliyun, openai or offline (default: the gateway's)")
    parser.add_argument("--token", help="bearer token, when the gateway has http.tokens")
    parser.add_argument("--protocol", type=int, default=3, choices=(1, 2, 3), help="binary protocol version")
    parser.add_argument("--mode", default="auto", choices=("auto", "manual"),
                        help="auto: the gateway hears the end of speech; manual: send stop after the audio")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the whole answer")
    parser.add_argument("--tail", type=float, default=3.0, help="auto mode: at most this much silence after the speech")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        pcm = read_wav(args.wav) if args.wav is not None else espeak_pcm(args.say, args.lang)
        options = Options(
            url=args.url, pcm=pcm, session_id=args.session, device_id=args.device_id, product_id=args.product_id,
            provider=args.provider, language=args.lang if args.say is not None else None, token=args.token,
            protocol=args.protocol, mode=args.mode, tail_s=args.tail, timeout_s=args.timeout,
        )  # fmt: skip
        result = asyncio.run(converse(options, echo=True))
    except ClientError as exc:
        print(f"voice-client: {exc.message}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    if args.out is not None:
        if result.audio:
            write_wav(args.out, bytes(result.audio), result.sample_rate or 16000)
            seconds = len(result.audio) / 2 / (result.sample_rate or 16000)
            print(f"audio: {seconds:.2f} s at {result.sample_rate} Hz saved to {args.out}")
        else:
            print(f"voice-client: the gateway sent no audio; nothing saved to {args.out}", file=sys.stderr)
    if result.errors:
        print(f"voice-client: the gateway reported {len(result.errors)} error(s)", file=sys.stderr)
        return 1
    if not result.transcript:
        print("voice-client: nothing was recognised", file=sys.stderr)
        return 1
    if not result.complete:
        print("voice-client: the reply did not complete", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
