"""The JSON Schema of a schedule request, shared by the MCP tool, the agent's tool and (copied)
the OpenAPI document, so the three describe one thing."""

from __future__ import annotations

from typing import Any

from deviceagentd.schedules.model import LANGUAGES, MAX_NAME_CHARS, MAX_TEXT_CHARS
from deviceagentd.schedules.requests import MAX_IN_SECONDS

WHEN_HELP = (
    "Give exactly one of inSeconds (a timer: run once that many seconds from now), at (run once at a "
    "local time: \"HH:MM\" = the next time the clock shows it, or \"YYYY-MM-DDTHH:MM\" in the gateway's "
    "time zone, or an ISO 8601 time with an offset; with repeat, a time of day for a recurring schedule) "
    "or cron (5 fields: minute hour day-of-month month day-of-week, local time)."
)
ACTION_HELP = (
    "What to do: {type: command, deviceId, command, params} sends a device command (as send_command); "
    "{type: scene, sceneId} runs a scene; {type: say, text, speaker or room} speaks on a speaker; "
    "{type: alarm, speaker or room, text?} rings a wake-up alarm (spoken)."
)


def request_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": WHEN_HELP,
        "properties": {
            "name": {"type": "string", "maxLength": MAX_NAME_CHARS, "description": "A label people recognise."},
            "inSeconds": {"type": "integer", "minimum": 1, "maximum": MAX_IN_SECONDS,
                          "description": "Run once, this many seconds from now."},
            "at": {"type": "string", "description": "HH:MM, YYYY-MM-DDTHH:MM (local) or ISO 8601 with offset."},
            "repeat": {"type": "string",
                       "description": "With at = HH:MM: daily, weekdays, weekends, or days like \"mon,wed,fri\"."},
            "cron": {"type": "string",
                     "description": "minute hour day-of-month month day-of-week, e.g. \"0 23 * * *\"."},
            "action": {
                "type": "object",
                "description": ACTION_HELP,
                "properties": {
                    "type": {"type": "string", "enum": ["command", "scene", "say", "alarm"]},
                    "deviceId": {"type": "string"},
                    "command": {"type": "string"},
                    "params": {"type": "object"},
                    "sceneId": {"type": "string"},
                    "text": {"type": "string", "maxLength": MAX_TEXT_CHARS},
                    "speaker": {"type": "string", "description": "The Device-Id of a speaker's voice session."},
                    "room": {"type": "string", "description": "A room of the rooms file with a speaker."},
                    "language": {"type": "string", "enum": list(LANGUAGES)},
                },
                "required": ["type"],
                "additionalProperties": False,
            },
        },
        "required": ["action"],
        "additionalProperties": False,
    }
