"""The voice platform API (Tuya hotel voice compatible) for in-room speakers, SPEC §6."""
