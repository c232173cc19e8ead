"""The MCP tools' names: short, stable, and the same for every site."""

from __future__ import annotations

LIST_DEVICES = "list_devices"
GET_STATE = "get_state"
GET_EVENTS = "get_events"
LIST_SCHEDULES = "list_schedules"
SEND_COMMAND = "send_command"
RUN_SCENE = "run_scene"
CREATE_SCHEDULE = "create_schedule"
DELETE_SCHEDULE = "delete_schedule"

# Tools that only read: the whole set in read-only mode, and what a client entry's "read" means.
READ_TOOLS = (LIST_DEVICES, GET_STATE, GET_EVENTS, LIST_SCHEDULES)
# Tools that change something on the site.
WRITE_TOOLS = (SEND_COMMAND, RUN_SCENE, CREATE_SCHEDULE, DELETE_SCHEDULE)
ALL_TOOLS = READ_TOOLS + WRITE_TOOLS
