"""Sending speech to the client paced in real time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from deviceagentd.voice.codec import AudioCodec
from deviceagentd.voice.protocol import BinaryCodec


class AudioOut:
    """Sends TTS frames `prebuffer_s` ahead of the device's playback, then one frame per frame
    duration, each encoded by the session's codec into one binary message. `play_end` (loop
    time) is when the device will have played everything sent, which is also what mutes the
    microphone."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], framing: BinaryCodec, codec: AudioCodec,
                 prebuffer_s: float) -> None:
        self.play_end = 0.0
        self._send = send
        self._framing = framing
        self._codec = codec
        self._frame_ms = codec.output.frame_duration_ms
        self._prebuffer_s = prebuffer_s
        self._timestamp_ms = 0

    async def send(self, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.play_end < now:
            self.play_end = now  # the device ran dry (or this is the first frame)
        ahead = self.play_end - now - self._prebuffer_s
        if ahead > 0:
            await asyncio.sleep(ahead)
        await self._send(self._framing.audio(self._codec.encode(frame), self._timestamp_ms))
        self.play_end += self._frame_ms / 1000
        self._timestamp_ms = (self._timestamp_ms + self._frame_ms) % (1 << 32)

    async def drain(self) -> None:
        """Until the device has played everything sent."""
        remaining = self.play_end - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.sleep(remaining)

    def stop(self) -> None:
        """Playback was aborted: nothing is playing any more."""
        self.play_end = min(self.play_end, asyncio.get_running_loop().time())
