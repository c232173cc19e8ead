"""The audio codec of a session, behind one interface whatever the client speaks.

    decode(payload) → 30 ms frames of 16 kHz PCM (what the VAD and the ASR take), often none
    encode(frame)   → one binary message payload from one frame of PCM at the output rate and
                      frame duration (what `OutputAudio` cuts TTS audio into)

`PcmCodec` is PCM s16le both ways (resampling the client's rate to 16 kHz). `OpusCodec`
(opus.py, imported only when a client asks for Opus, so a gateway whose speakers speak PCM never
loads libopus) decodes one packet per message and encodes one packet per frame.
"""

from __future__ import annotations

from typing import Protocol

from deviceagentd.voice.audio import AudioParams, InputAudio


class CodecError(ValueError):
    """A payload that does not decode (a corrupt Opus packet): dropped and counted."""


class CodecUnavailable(RuntimeError):
    """The codec's library is not installed (libopus): the hello is refused with this message."""


class AudioCodec(Protocol):
    @property
    def input(self) -> AudioParams:
        """What the client sends."""
        ...

    @property
    def output(self) -> AudioParams:
        """What we send: format, rate and frame duration (the server hello's audio_params)."""
        ...

    def decode(self, payload: bytes) -> list[bytes]:
        """The 30 ms 16 kHz PCM frames now complete; raises CodecError for an undecodable payload."""
        ...

    def reset(self) -> None:
        """Drop buffered input (a new `listen`, an `abort`)."""
        ...

    def encode(self, frame: bytes) -> bytes:
        """One output frame of PCM → one message payload."""
        ...


class PcmCodec:
    def __init__(self, input_params: AudioParams, output_params: AudioParams) -> None:
        self._input = input_params
        self._output = output_params
        self._audio = InputAudio(input_params.sample_rate)

    @property
    def input(self) -> AudioParams:
        return self._input

    @property
    def output(self) -> AudioParams:
        return self._output

    def decode(self, payload: bytes) -> list[bytes]:
        return self._audio.push(payload)

    def reset(self) -> None:
        self._audio.reset()

    def encode(self, frame: bytes) -> bytes:
        return frame


def open_codec(input_params: AudioParams, output_params: AudioParams) -> AudioCodec:
    """The codec for a hello's audio_params (already checked by `parse_audio_params`); raises
    CodecUnavailable when the codec's library is missing."""
    if input_params.format == "opus":
        from deviceagentd.voice.opus import OpusCodec

        return OpusCodec(input_params, output_params)
    return PcmCodec(input_params, output_params)
