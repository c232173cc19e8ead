"""Realtime voice channel. Its audio modules import numpy and webrtcvad: import them only when a
voice session starts, never from the core daemon (its idle RSS is measured without them)."""
