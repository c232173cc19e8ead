"""Opus both ways, through libopus (Debian's libopus0) and its ctypes binding `opuslib-next`.

Imported only when a hello asks for Opus (codec.open_codec), so a gateway whose speakers speak
PCM never maps libopus. The binding loads the library at import; a missing libopus or binding
becomes CodecUnavailable, which refuses the hello with words an installer can act on.

Decoding: one decoder per session, always at 16 kHz (Opus decodes any packet at any of its
rates, so no resampling whatever the client's rate), one packet per message: a normal packet,
a DTX packet of 1–3 bytes (comfort silence) or a multi-frame packet of up to 120 ms. The PCM is
cut into the 30 ms frames the VAD and the ASR take. A packet libopus refuses raises CodecError
(the session counts it and goes on); an empty message carries no packet and is ignored.

Encoding: one encoder per session at the output rate; every frame of PCM (the output frame
duration, which is the client's own `frame_duration`) becomes one packet.
"""

from __future__ import annotations

from typing import Any, Final

from deviceagentd.voice.audio import FRAME_BYTES, SAMPLE_RATE, AudioParams, Framer
from deviceagentd.voice.codec import CodecError, CodecUnavailable

# The longest Opus packet: 120 ms.
MAX_PACKET_MS: Final = 120
MAX_DECODED_SAMPLES: Final = SAMPLE_RATE * MAX_PACKET_MS // 1000
# Speech from a TTS: "audio" keeps the synthetic voice's timbre; complexity 5 halves the
# encoder's CPU against the default 10 at no audible cost for speech (a Pi encodes many sessions).
APPLICATION: Final = "audio"
COMPLEXITY: Final = 5


def load_binding() -> Any:
    """The opuslib_next module; CodecUnavailable when it or libopus is missing."""
    try:
        import opuslib_next
    except ImportError:
        raise CodecUnavailable("Opus audio needs the opuslib-next package in the gateway's Python "
                               "(it ships with the voice extra)") from None
    except Exception:  # the binding raises a bare Exception when libopus is not found
        raise CodecUnavailable("Opus audio needs libopus on the gateway: apt-get install libopus0") from None
    return opuslib_next


class OpusCodec:
    def __init__(self, input_params: AudioParams, output_params: AudioParams) -> None:
        opus = load_binding()
        self._opus_error: type[Exception] = opus.OpusError
        self._input = input_params
        self._output = output_params
        self._decoder = opus.Decoder(SAMPLE_RATE, 1)
        self._encoder = opus.Encoder(output_params.sample_rate, 1, APPLICATION)
        self._encoder.complexity = COMPLEXITY
        self._frame_samples = output_params.sample_rate * output_params.frame_duration_ms // 1000
        self._framer = Framer(FRAME_BYTES)

    @property
    def input(self) -> AudioParams:
        return self._input

    @property
    def output(self) -> AudioParams:
        return self._output

    def decode(self, payload: bytes) -> list[bytes]:
        if not payload:
            return []
        try:
            pcm: bytes = self._decoder.decode(payload, MAX_DECODED_SAMPLES)
        except self._opus_error as exc:
            raise CodecError(f"Opus packet of {len(payload)} bytes does not decode ({exc})") from None
        return self._framer.push(pcm)

    def reset(self) -> None:
        self._framer.reset()
        self._decoder.reset_state()

    def encode(self, frame: bytes) -> bytes:
        if len(frame) != self._frame_samples * 2:
            raise ValueError(f"an Opus frame of {self._output.frame_duration_ms} ms needs "
                             f"{self._frame_samples * 2} bytes, not {len(frame)}")
        packet: bytes = self._encoder.encode(frame, self._frame_samples)
        return packet
