"""The OpenAPI 3.1 document (deviceagentd/http/openapi.json): well formed, complete (every
route of the aiohttp router, nothing more), tied to the limits in the code, served verbatim at
/api/openapi.json, and true: what a real daemon answers validates against what it documents.

The structural checks are our own (no validator in the dev extras); when
`openapi-spec-validator` happens to be installed it is run as well.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import math
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from daemon_harness import PRODUCTS_DIR, RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker, free_port

import deviceagentd
from deviceagentd.agent.runner import Agent
from deviceagentd.agent.types import MAX_SESSION_ID_LEN
from deviceagentd.config import AgentConfig, CommandsConfig, HttpConfig, VisionConfig, VoiceConfig
from deviceagentd.core.catalog import Catalog, load_catalog
from deviceagentd.core.clock import Clock
from deviceagentd.core.command_request import COMMAND_FIELDS
from deviceagentd.core.commands import MAX_REQUEST_ID_LEN, MAX_TIMEOUT_MS, MIN_TIMEOUT_MS, CommandService
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry
from deviceagentd.core.spec import load_spec_file
from deviceagentd.daemon import VISION_BODY_OVERHEAD
from deviceagentd.http.app import create_app, create_voice_app
from deviceagentd.http.context import HttpContext
from deviceagentd.http.openapi import OPENAPI_PATH, load_openapi
from deviceagentd.http.routes_agent import CHAT_FIELDS, FRAME_FIELDS, MAX_VISION_REFS
from deviceagentd.http.routes_console import load_asyncapi
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions
from deviceagentd.store.records import CommandRecord, DeviceRecord, EventRecord, NewEvent
from deviceagentd.voice.service import VoiceService
from deviceagentd.voiceplatform.routes import add_routes as add_voice_platform_routes
from deviceagentd.voiceplatform.service import VoicePlatform

ROOMS_FILE = Path(__file__).resolve().parent.parent / "etc" / "deviceagentd" / "voice-platform.toml"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TOKEN = "openapi-test-token-0123456789"
WAIT_S = 15.0
# Operations whose success is not JSON, and what it is instead.
NON_JSON_SUCCESS = {
    "/metrics": {"text/plain"}, "/api/chat": {"text/event-stream"}, "/api/stream": {"text/event-stream"},
    "/": {"text/html"}, "/console/{file}": {"text/javascript", "text/css"},
}
# The console's files: open to anyone (they hold no data), cached with ETags.
CONSOLE_FILES = ("/", "/console/{file}")
SSE_EVENTS = {"session", "delta", "tool_call", "tool_result", "done", "error"}
TERMINAL_EVENTS = {"done", "error"}
# One image per vision format (the gateway checks the magic bytes; the PNG is a real 1×1 image).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"


def document() -> dict[str, Any]:
    """The file itself, read fresh (not the cached copy the server uses)."""
    loaded: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


# ---------------------------------------------------------------------------------------------
# Reading the document: $ref, operations, a small JSON Schema 2020-12 validator
# ---------------------------------------------------------------------------------------------


def resolve_pointer(doc: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise KeyError(f"only local references are used here, got {ref!r}")
    node: Any = doc
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(f"{ref} does not resolve (no {part!r})")
    return node


def deref(doc: dict[str, Any], node: Any) -> Any:
    """Follow $ref chains of OpenAPI objects (parameters, responses, ...)."""
    seen: set[str] = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if ref in seen:
            raise AssertionError(f"$ref cycle at {ref}")
        seen.add(ref)
        node = resolve_pointer(doc, ref)
    return node


def walk(node: Any, path: str = "#") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(path, method, operation, path item) for every operation."""
    for path, item in doc["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method], item


def operation_parameters(doc: dict[str, Any], item: dict[str, Any], op: dict[str, Any]) -> dict[tuple[str, str], Any]:
    params: dict[tuple[str, str], Any] = {}
    for raw in item.get("parameters", []) + op.get("parameters", []):
        param = deref(doc, raw)
        params[(param["in"], param["name"])] = param
    return params


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: true is not 1, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def json_type_ok(kind: str, value: Any) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if kind == "number":
        return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    raise AssertionError(f"unknown JSON Schema type {kind!r}")


DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def schema_errors(doc: dict[str, Any], schema: Any, value: Any, at: str = "$") -> list[str]:
    """Why `value` does not validate against `schema` (the keywords this document uses)."""
    if schema is True:
        return []
    if schema is False:
        return [f"{at}: no value is allowed here"]
    assert isinstance(schema, dict), f"schema at {at} is not an object: {schema!r}"
    errors: list[str] = []
    if "$ref" in schema:
        errors += schema_errors(doc, resolve_pointer(doc, schema["$ref"]), value, at)
    for sub in schema.get("allOf", []):
        errors += schema_errors(doc, sub, value, at)
    if "anyOf" in schema and not any(not schema_errors(doc, s, value, at) for s in schema["anyOf"]):
        errors.append(f"{at}: matches none of anyOf")
    if "oneOf" in schema and sum(1 for s in schema["oneOf"] if not schema_errors(doc, s, value, at)) != 1:
        errors.append(f"{at}: does not match exactly one of oneOf")
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(json_type_ok(k, value) for k in kinds):
            return [*errors, f"{at}: {value!r} is not of type {schema['type']}"]
    if "const" in schema and not json_equal(schema["const"], value):
        errors.append(f"{at}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and not any(json_equal(v, value) for v in schema["enum"]):
        errors.append(f"{at}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{at}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{at}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{at}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{at}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{at}: {value!r} does not match {schema['pattern']}")
        if schema.get("format") == "date-time" and not DATE_TIME.match(value):
            errors.append(f"{at}: {value!r} is not an RFC 3339 date-time")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{at}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{at}: more than {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                errors += schema_errors(doc, schema["items"], item, f"{at}[{index}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{at}: required property {name!r} is missing")
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(doc, properties[name], item, f"{at}.{name}")
            elif "additionalProperties" in schema:
                errors += schema_errors(doc, schema["additionalProperties"], item, f"{at}.{name}")
    return errors


def assert_valid(doc: dict[str, Any], schema: Any, value: Any, what: str) -> None:
    errors = schema_errors(doc, schema, value)
    assert not errors, f"{what} does not match its schema:\n" + "\n".join(errors) + f"\nvalue: {value!r}"


# Keywords a schema here may use: JSON Schema 2020-12 (core, applicator, validation, format,
# meta-data) and the OpenAPI 3.1 additions. A typo ("requred") would silently constrain nothing.
SCHEMA_KEYWORDS = {
    "$ref", "$id", "$schema", "$anchor", "$defs", "$comment", "$dynamicRef", "$dynamicAnchor",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "prefixItems", "items",
    "contains", "properties", "patternProperties", "additionalProperties", "propertyNames",
    "unevaluatedItems", "unevaluatedProperties", "type", "enum", "const", "multipleOf", "maximum",
    "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems",
    "minItems", "uniqueItems", "maxContains", "minContains", "maxProperties", "minProperties", "required",
    "dependentRequired", "format", "contentEncoding", "contentMediaType", "contentSchema", "title",
    "description", "default", "deprecated", "readOnly", "writeOnly", "examples",
    "discriminator", "xml", "externalDocs", "example",
}
SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
SUBSCHEMA_ONE = ("not", "if", "then", "else", "items", "contains", "additionalProperties", "propertyNames",
                 "unevaluatedItems", "unevaluatedProperties", "contentSchema")


def schema_problems(schema: Any, at: str) -> Iterator[str]:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        yield f"{at}: a schema must be an object or a boolean"
        return
    for key in schema:
        if key not in SCHEMA_KEYWORDS and not key.startswith("x-"):
            yield f"{at}: unknown schema keyword {key!r}"
    kinds = schema.get("type", [])
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind not in ("null", "boolean", "integer", "number", "string", "array", "object"):
            yield f"{at}: unknown type {kind!r}"
    if "required" in schema and not (
        isinstance(schema["required"], list) and all(isinstance(r, str) for r in schema["required"])
    ):
        yield f"{at}: required must be a list of property names"
    for key in SUBSCHEMA_MAPS:
        for name, sub in schema.get(key, {}).items():
            yield from schema_problems(sub, f"{at}/{key}/{name}")
    for key in SUBSCHEMA_LISTS:
        for index, sub in enumerate(schema.get(key, [])):
            yield from schema_problems(sub, f"{at}/{key}/{index}")
    for key in SUBSCHEMA_ONE:
        if key in schema:
            yield from schema_problems(schema[key], f"{at}/{key}")


def all_schemas(doc: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every top-level schema position of the document (components, parameters, media types, headers)."""
    for name, schema in doc["components"].get("schemas", {}).items():
        yield f"#/components/schemas/{name}", schema
    for path, node in walk(doc):
        if not isinstance(node, dict) or path.startswith("#/components/schemas"):
            continue
        if "schema" in node and ("in" in node or "content" not in node):
            # A parameter, a header or a media type object.
            yield f"{path}/schema", node["schema"]


def media_examples(doc: dict[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """(where, schema, example value) for every example in the document."""
    for name, schema in doc["components"]["schemas"].items():
        for index, example in enumerate(schema.get("examples", [])):
            yield f"#/components/schemas/{name}/examples/{index}", schema, example
    for path, node in walk(doc):
        if not isinstance(node, dict) or "schema" not in node or path.startswith("#/components/schemas"):
            continue
        if "example" in node:
            yield f"{path}/example", node["schema"], node["example"]
        for key, example in node.get("examples", {}).items():
            example = deref(doc, example)
            assert "value" in example, f"{path}/examples/{key} has no value"
            if path.endswith("/text/event-stream"):
                # The schema is that of one event, as an event-stream parser yields it.
                for index, event in enumerate(sse_items(example["value"])):
                    yield f"{path}/examples/{key}#{index}", node["schema"], event
                continue
            yield f"{path}/examples/{key}", node["schema"], example["value"]


def sse_items(raw: str) -> list[dict[str, str]]:
    """The events of a stream as Schemathesis validates them: {"event", "data"} with the raw data."""
    items = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            items.append({"event": name, "data": "\n".join(data)})
    return items


def parse_sse(raw: str) -> list[tuple[str, Any]]:
    """(event name, decoded data) pairs, as an EventSource reads them (comments skipped)."""
    events: list[tuple[str, Any]] = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


async def read_stream_until(resp: Any, name: str, timeout: float = WAIT_S) -> str:
    """A never-ending event stream's text up to the end of its first `name` event."""
    raw = b""
    marker = f"event: {name}\n".encode()
    async with asyncio.timeout(timeout):
        while not (marker in raw and b"\n\n" in raw[raw.index(marker):]):
            chunk = await resp.content.readany()
            assert chunk, f"the stream ended before a {name} event: {raw!r}"
            raw += chunk
    end = raw.index(b"\n\n", raw.index(marker)) + 2
    return raw[:end].decode()


def live_stream_media(doc: dict[str, Any]) -> dict[str, Any]:
    media: dict[str, Any] = doc["paths"]["/api/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    return media


def check_live_stream(doc: dict[str, Any], events: list[tuple[str, Any]], what: str) -> None:
    """Every event is documented and its data matches its schema."""
    documented = live_stream_media(doc)["x-sse-events"]
    for index, (name, data) in enumerate(events):
        assert name in documented, f"{what}: event {index} {name!r} is not documented"
        assert_valid(doc, documented[name], data, f"{what}: event {index} ({name})")


def chat_stream_media(doc: dict[str, Any]) -> dict[str, Any]:
    media: dict[str, Any] = doc["paths"]["/api/chat"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    return media


def check_chat_stream(doc: dict[str, Any], events: list[tuple[str, Any]], what: str) -> None:
    """Every event is documented and its data matches its schema; the order is the documented one."""
    documented = chat_stream_media(doc)["x-sse-events"]
    names = [name for name, _ in events]
    for index, (name, data) in enumerate(events):
        assert name in documented, f"{what}: event {index} {name!r} is not documented"
        assert_valid(doc, documented[name], data, f"{what}: event {index} ({name})")
    assert names and names[0] == "session", f"{what}: the stream must start with session: {names}"
    assert names[-1] in TERMINAL_EVENTS, f"{what}: the stream must end with done or error: {names}"
    assert sum(name in TERMINAL_EVENTS for name in names) == 1, f"{what}: one done or error, last: {names}"
    assert names.count("session") == 1, f"{what}: {names}"
    calls: dict[str, str] = {}
    for name, data in events:
        if name == "tool_call":
            calls[data["id"]] = data["name"]
        elif name == "tool_result":
            assert calls.get(data["id"]) == data["name"], f"{what}: tool_result {data['id']} without its tool_call"
    last_name, last = events[-1]
    if last_name == "done":
        assert last["sessionId"] == events[0][1]["sessionId"], what
        # What the EMQX SDKs rely on: the deltas joined are the full text of done.
        assert last["text"] == "".join(data["textChunk"] for name, data in events if name == "delta"), what


# ---------------------------------------------------------------------------------------------
# The document on its own
# ---------------------------------------------------------------------------------------------


def test_the_file_is_json_and_is_what_the_server_loads(doc: dict[str, Any]) -> None:
    assert load_openapi() == doc


def test_it_is_an_openapi_3_1_document(doc: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert doc.get("jsonSchemaDialect", "https://json-schema.org/draft/2020-12/schema") in (
        "https://json-schema.org/draft/2020-12/schema",
        "https://spec.openapis.org/oas/3.1/dialect/base",
    )
    allowed = {"openapi", "info", "jsonSchemaDialect", "servers", "paths", "webhooks", "components", "security",
               "tags", "externalDocs"}
    assert set(doc) <= allowed, set(doc) - allowed
    assert isinstance(doc["info"]["title"], str) and doc["info"]["title"]
    assert doc["paths"], "no paths"
    for path in doc["paths"]:
        assert path.startswith("/"), path


def test_info_version_is_the_package_version(doc: dict[str, Any]) -> None:
    assert doc["info"]["version"] == deviceagentd.__version__


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = [(path, node["$ref"]) for path, node in walk(doc) if isinstance(node, dict) and "$ref" in node]
    assert refs, "the document uses no $ref at all?"
    for path, ref in refs:
        try:
            resolve_pointer(doc, ref)
        except KeyError as exc:
            pytest.fail(f"{path}: {exc}")


def test_every_component_is_used(doc: dict[str, Any]) -> None:
    used = {node["$ref"] for _, node in walk(doc) if isinstance(node, dict) and "$ref" in node}
    for kind in ("schemas", "parameters", "responses"):
        for name in doc["components"].get(kind, {}):
            assert f"#/components/{kind}/{name}" in used, f"components/{kind}/{name} is never referenced"


def test_every_operation_is_complete(doc: dict[str, Any]) -> None:
    ids: list[str] = []
    for path, method, op, _ in operations(doc):
        where = f"{method.upper()} {path}"
        ids.append(op["operationId"])
        assert op.get("summary"), f"{where} has no summary"
        assert op.get("tags"), f"{where} has no tags"
        responses = op.get("responses")
        assert responses, f"{where} has no responses"
        assert "200" in responses or "201" in responses, f"{where} documents no success"
        for status, raw in responses.items():
            assert re.fullmatch(r"[1-5]\d\d|[1-5]XX|default", status), f"{where}: bad status key {status}"
            response = deref(doc, raw)
            assert response.get("description"), f"{where} {status} has no description"
            if status in ("200", "201") and path in NON_JSON_SUCCESS:
                assert set(response.get("content", {})) == NON_JSON_SUCCESS[path], f"{where} {status}"
            elif status == "304":
                assert path in CONSOLE_FILES and "content" not in response, f"{where} {status}"
            else:
                assert "application/json" in response.get("content", {}), f"{where} {status} is not JSON"
            if status.startswith(("4", "5")) and path != "/api/health":
                schema = deref(doc, response["content"]["application/json"]["schema"])
                envelope = {"$ref": "#/components/schemas/Error"}
                assert schema is deref(doc, envelope) or envelope in schema.get("allOf", []), (
                    f"{where} {status} does not use the Error envelope"
                )
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_path_parameters_are_declared_and_required(doc: dict[str, Any]) -> None:
    for path, method, op, item in operations(doc):
        params = operation_parameters(doc, item, op)
        in_path = set(re.findall(r"{([^}]+)}", path))
        declared = {name for (where, name) in params if where == "path"}
        assert declared == in_path, f"{method.upper()} {path}: path params {declared} vs template {in_path}"
        for (where, name), param in params.items():
            assert where in ("path", "query", "header", "cookie"), f"{path} {name}: bad location {where}"
            assert "schema" in param, f"{path} {name}: no schema"
            if where == "path":
                assert param.get("required") is True, f"{path} {name}: path parameters must be required"


def test_schemas_use_only_known_keywords(doc: dict[str, Any]) -> None:
    problems = [p for where, schema in all_schemas(doc) for p in schema_problems(schema, where)]
    assert not problems, "\n".join(problems)


def test_every_example_matches_its_schema(doc: dict[str, Any]) -> None:
    examples = list(media_examples(doc))
    assert len(examples) >= 10
    for where, schema, value in examples:
        assert_valid(doc, schema, value, where)


def test_the_validator_here_really_rejects(doc: dict[str, Any]) -> None:
    """The checks above are worth something only if the validator can say no."""
    device = doc["components"]["schemas"]["Device"]["examples"][0]
    device_ref = {"$ref": "#/components/schemas/Device"}
    assert not schema_errors(doc, device_ref, device)
    assert schema_errors(doc, device_ref, {**device, "status": "sleeping"})
    assert schema_errors(doc, device_ref, {**device, "lastSeen": "yesterday"})
    assert schema_errors(doc, device_ref, {k: v for k, v in device.items() if k != "state"})
    request = {"$ref": "#/components/schemas/CommandRequest"}
    assert not schema_errors(doc, request, {"command": "x"})
    assert schema_errors(doc, request, {"command": "x", "priority": 1})
    assert schema_errors(doc, request, {"command": "x", "timeoutMs": 99})
    assert schema_errors(doc, request, {"command": "x", "timeoutMs": True})
    chat = {"$ref": "#/components/schemas/ChatRequest"}
    assert not schema_errors(doc, chat, {"message": "hi", "stream": True, "visionRefs": [{"frameId": "f"}] * 8})
    assert schema_errors(doc, chat, {"message": "hi", "stream": False})
    assert schema_errors(doc, chat, {"message": "hi"})
    assert schema_errors(doc, chat, {"message": "", "stream": True})
    assert schema_errors(doc, chat, {"message": "hi", "stream": True, "visionRefs": [{"frameId": "f"}] * 9})
    assert schema_errors(doc, chat, {"message": "hi", "stream": True, "visionRefs": [{"source": "camera"}]})
    assert schema_errors(doc, chat, {"message": "hi", "stream": True, "sessionId": "a\u0007b"})
    assert schema_errors(doc, chat, {"message": "hi", "stream": True, "colour": "red"})
    result = {"$ref": "#/components/schemas/ToolResult"}
    assert not schema_errors(doc, result, {"id": "1", "name": "list_devices", "ok": True, "result": None})
    assert not schema_errors(doc, result, {"id": "1", "name": "list_devices", "ok": False, "error": "no"})
    assert schema_errors(doc, result, {"id": "1", "name": "list_devices", "ok": True})
    assert schema_errors(doc, result, {"id": "1", "name": "list_devices", "ok": False, "result": {}})
    done = {"$ref": "#/components/schemas/ChatDoneEvent"}
    assert schema_errors(doc, done, {"sessionId": "s", "text": "", "interrupted": False})
    frame = doc["components"]["schemas"]["VisionFrame"]["examples"][0]
    frame_ref = {"$ref": "#/components/schemas/VisionFrame"}
    assert not schema_errors(doc, frame_ref, frame)
    assert schema_errors(doc, frame_ref, {**frame, "frameId": "frame-001"})
    assert schema_errors(doc, frame_ref, {**frame, "visionRefs": [{"frameId": frame["frameId"]}]})
    upload = {"$ref": "#/components/schemas/VisionFrameUpload"}
    good = {"sessionId": "s", "mimeType": "image/png", "imageBase64": base64.b64encode(PNG).decode()}
    assert not schema_errors(doc, upload, good)
    assert not schema_errors(doc, upload, {**good, "imageBase64": "data:image/png;base64," + good["imageBase64"]})
    assert schema_errors(doc, upload, {**good, "imageBase64": good["imageBase64"].rstrip("=")})
    assert schema_errors(doc, upload, {**good, "imageBase64": base64.encodebytes(PNG).decode()})
    assert schema_errors(doc, upload, {**good, "mimeType": "image/gif"})
    broken = copy.deepcopy(doc)
    broken["components"]["schemas"]["Device"]["requred"] = ["deviceId"]
    assert list(schema_problems(broken["components"]["schemas"]["Device"], "Device"))


def test_bearer_security_is_global_and_health_is_open(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert doc["security"] == [{"bearerAuth": []}]
    assert schemes["bearerAuth"]["type"] == "http"
    assert schemes["bearerAuth"]["scheme"].lower() == "bearer"
    for path, method, op, _ in operations(doc):
        for requirement in op.get("security", []):
            assert set(requirement) <= set(schemes), f"{method} {path}: unknown security scheme"
        if path in ("/api/health", *CONSOLE_FILES) or path.startswith("/v1.0/"):
            # Speakers authenticate with their own tokens and signatures, not http.tokens.
            assert op["security"] == [], f"{path} must override the global bearer requirement"
            assert "401" not in op["responses"]
        else:
            assert "security" not in op, f"{method.upper()} {path} must keep the global bearer requirement"
            assert "401" in op["responses"], f"{method.upper()} {path} can answer 401"


def test_error_statuses_documented_per_operation(doc: dict[str, Any]) -> None:
    """Every status each handler can produce (SPEC §3) is in the document, and no other."""
    expected = {
        ("get", "/api/health"): {"200", "503"},
        ("get", "/api/products"): {"200", "401"},
        ("get", "/api/products/{productId}"): {"200", "401", "404"},
        ("get", "/api/products/{productId}/devices"): {"200", "400", "401", "404"},
        ("get", "/api/devices/{deviceId}"): {"200", "401", "404"},
        ("post", "/api/devices/{deviceId}/commands"): {
            "200", "400", "401", "404", "409", "413", "415", "503", "504",
        },
        ("get", "/api/devices/{deviceId}/events"): {"200", "400", "401", "404"},
        ("get", "/api/devices"): {"200", "400", "401", "404"},
        ("get", "/api/devices/{deviceId}/commands"): {"200", "400", "401", "404"},
        ("get", "/api/stream"): {"200", "400", "401", "404"},
        ("get", "/"): {"200", "304"},
        ("get", "/console/{file}"): {"200", "304", "404"},
        ("get", "/api/gateway"): {"200", "401"},
        ("get", "/api/voice-platform"): {"200", "401"},
        ("post", "/api/voice-platform/scenes/{sceneId}/run"): {"200", "401", "404"},
        ("get", "/api/asyncapi.json"): {"200", "401"},
        ("post", "/api/chat"): {"200", "400", "401", "404", "409", "413", "415"},
        ("get", "/api/sessions/{sessionId}/history"): {"200", "400", "401", "404"},
        ("post", "/api/sessions/{sessionId}/interrupt"): {"200", "401", "404"},
        ("delete", "/api/sessions/{sessionId}"): {"200", "401", "404"},
        ("post", "/api/vision/frames"): {"200", "400", "401", "413", "415"},
        ("get", "/api/schedules"): {"200", "400", "401"},
        ("post", "/api/schedules"): {"201", "400", "401", "409", "413", "415"},
        ("get", "/api/schedules/{scheduleId}"): {"200", "401", "404"},
        ("delete", "/api/schedules/{scheduleId}"): {"200", "401", "404"},
        ("get", "/api/openapi.json"): {"200", "401"},
        ("get", "/metrics"): {"200", "401"},
        # Tuya style: every voice platform failure is HTTP 200 with the code in the envelope.
        ("get", "/v1.0/voice/devices/{voice_id}/token"): {"200"},
        ("delete", "/v1.0/voice/devices/{voice_id}/token"): {"200"},
        ("get", "/v1.0/token/{refresh_token}"): {"200"},
        ("post", "/v1.0/token/{refresh_token}"): {"200"},
        ("post", "/v1.0/voice/execute"): {"200"},
        # Any body is accepted: the firmware's answer is never a refusal but for the token.
        ("get", "/xiaozhi/ota/"): {"200", "401"},
        ("post", "/xiaozhi/ota/"): {"200", "401"},
    }
    got = {(method, path): set(op["responses"]) for path, method, op, _ in operations(doc)}
    assert got == expected


def test_limits_are_the_ones_in_the_code(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    request = schemas["CommandRequest"]
    assert set(request["properties"]) == COMMAND_FIELDS
    assert request["additionalProperties"] is False
    assert request["required"] == ["command"]
    timeout = request["properties"]["timeoutMs"]
    assert (timeout["type"], timeout["minimum"], timeout["maximum"]) == ("integer", MIN_TIMEOUT_MS, MAX_TIMEOUT_MS)
    assert timeout["default"] == CommandsConfig().default_timeout_ms
    assert request["properties"]["requestId"]["maxLength"] == MAX_REQUEST_ID_LEN
    params = doc["components"]["parameters"]
    assert params["Limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}
    assert params["Status"]["schema"]["enum"] == ["online", "offline", ""]  # "": all, as absent
    commands = doc["paths"]["/api/devices/{deviceId}/commands"]["post"]
    assert commands["requestBody"]["required"] is True
    limit = commands["responses"]["413"]["content"]["application/json"]["examples"]["too_large"]["value"]
    assert str(HttpConfig().max_body_bytes) in limit["error"]["message"]


def test_agent_limits_are_the_ones_in_the_code(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    chat = schemas["ChatRequest"]
    assert set(chat["properties"]) == CHAT_FIELDS
    assert chat["additionalProperties"] is False
    assert chat["required"] == ["message", "stream"]
    assert chat["properties"]["stream"]["const"] is True
    assert chat["properties"]["message"]["maxLength"] == AgentConfig().max_message_chars
    assert chat["properties"]["sessionId"]["maxLength"] == MAX_SESSION_ID_LEN
    assert chat["properties"]["visionRefs"]["maxItems"] == MAX_VISION_REFS
    assert doc["components"]["parameters"]["SessionId"]["schema"]["maxLength"] == MAX_SESSION_ID_LEN
    assert doc["components"]["parameters"]["HistoryLimit"]["schema"] == {
        "type": "integer", "minimum": 1, "maximum": 1000, "default": 50}
    upload = schemas["VisionFrameUpload"]
    assert set(upload["properties"]) == FRAME_FIELDS
    assert upload["additionalProperties"] is False
    assert upload["required"] == ["sessionId", "mimeType", "imageBase64"]

    chat_op = doc["paths"]["/api/chat"]["post"]
    assert chat_op["requestBody"]["required"] is True
    examples = chat_op["responses"]["400"]["content"]["application/json"]["examples"]
    too_long = examples["message_too_long"]["value"]["error"]["message"]
    assert too_long == f"message is longer than {AgentConfig().max_message_chars} characters"
    assert f"at most {MAX_VISION_REFS} " in examples["too_many_vision_refs"]["value"]["error"]["message"]
    limit = chat_op["responses"]["413"]["content"]["application/json"]["examples"]["too_large"]["value"]
    assert limit["error"]["message"].endswith(f"limit of {HttpConfig().max_body_bytes} bytes")

    frames = doc["paths"]["/api/vision/frames"]["post"]
    assert frames["requestBody"]["required"] is True
    vision = VisionConfig()
    examples = frames["responses"]["413"]["content"]["application/json"]["examples"]
    assert examples["frame_too_large"]["value"]["error"]["message"].endswith(f"limit of {vision.max_frame_bytes}")
    body_limit = vision.max_frame_bytes * 4 // 3 + VISION_BODY_OVERHEAD
    assert examples["too_large"]["value"]["error"]["message"].endswith(f"limit of {body_limit} bytes")


def test_seed_examples_are_in_the_document(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/api/devices/{deviceId}/commands"]["post"]
    request = op["requestBody"]["content"]["application/json"]["examples"]["set_target_temperature"]["value"]
    assert request == {"command": "set_target_temperature", "params": {"target_temperature": 24}, "timeoutMs": 30000}
    result = op["responses"]["200"]["content"]["application/json"]["examples"]["ok"]["value"]
    assert result["data"] == {"target_temperature": 24} and result["ok"] is True and result["code"] == 0
    device = doc["paths"]["/api/devices/{deviceId}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert device["examples"]["thermostat"]["value"]["deviceId"] == "thermostat-001"
    assert doc["components"]["parameters"]["DeviceId"]["example"] == "thermostat-001"

    chat = doc["paths"]["/api/chat"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert chat["seed"]["value"] == {
        "message": "Check the current temperature and set the target temperature to 24",
        "stream": True,
        "sessionId": "demo-session",
        "metadata": {"productId": "thermostat", "deviceId": "thermostat-001"},
    }
    frames = doc["paths"]["/api/vision/frames"]["post"]
    upload = frames["requestBody"]["content"]["application/json"]["examples"]["seed"]["value"]
    assert upload == {"sessionId": "demo-session", "deviceId": "thermostat-001", "mimeType": "image/png",
                      "imageBase64": base64.b64encode(PNG).decode(), "source": "camera"}
    answer = frames["responses"]["200"]["content"]["application/json"]["examples"]["seed"]["value"]
    assert (answer["capturedAt"], answer["source"], answer["mimeType"]) == ("2026-05-11T10:00:00.000Z", "camera",
                                                                           "image/png")
    # The seed passes the upload's frameId, capturedAt and source on to chat as visionRefs.
    vision = chat["vision"]["value"]
    assert vision["message"] == "Use this image to check whether the device screen looks abnormal"
    assert vision["visionRefs"] == answer["visionRefs"] == [
        {key: answer[key] for key in ("frameId", "capturedAt", "source")}]


def test_the_chat_stream_is_documented_event_by_event(doc: dict[str, Any]) -> None:
    media = chat_stream_media(doc)
    # The schema is that of one event ({event, data}), one branch per event name whose data is a
    # JSON text of the same schema x-sse-events names: what Schemathesis validates a stream with.
    for stream in (media, live_stream_media(doc)):
        assert stream["schema"]["type"] == "object" and stream["schema"]["required"] == ["event", "data"]
        branches = {branch["properties"]["event"]["const"]: branch["properties"]["data"]
                    for branch in stream["schema"]["oneOf"]}
        assert {name: data["contentSchema"] for name, data in branches.items()} == stream["x-sse-events"]
        assert all(data["contentMediaType"] == "application/json" for data in branches.values())
    events = media["x-sse-events"]
    assert set(events) == SSE_EVENTS
    for name, schema in events.items():
        assert set(schema) == {"$ref"} and schema["$ref"].startswith("#/components/schemas/Chat"), name
    headers = doc["paths"]["/api/chat"]["post"]["responses"]["200"]["headers"]
    assert headers["Cache-Control"]["schema"]["const"] == "no-cache"
    ends = set()
    for key, example in media["examples"].items():
        stream = parse_sse(example["value"])
        check_chat_stream(doc, stream, f"example {key}")
        ends.add(stream[-1][0])
    assert ends == TERMINAL_EVENTS, "the examples show a stream ending with done and one ending with error"
    seed = parse_sse(media["examples"]["seed"]["value"])
    assert [data["name"] for name, data in seed if name == "tool_call"] == ["get_device_state", "send_command"]
    assert parse_sse(media["examples"]["interrupted"]["value"])[-1][1]["interrupted"] is True
    # The parser used on real streams skips the comments the server sends as keep-alives.
    raw = ': keep-alive\n\nevent: delta\r\ndata: {"textChunk": "a"}\r\n\n'
    assert parse_sse(raw) == [("delta", {"textChunk": "a"})]


def test_the_live_stream_is_documented_event_by_event(doc: dict[str, Any]) -> None:
    media = live_stream_media(doc)
    assert set(media["x-sse-events"]) == {"ready", "state", "lifecycle", "event", "command", "missed"}
    example = media["examples"]["live"]["value"]
    events = parse_sse(example)
    check_live_stream(doc, events, "example")
    assert {name for name, _ in events} == {"ready", "state", "lifecycle", "event", "command"}


def test_openapi_spec_validator_accepts_it(doc: dict[str, Any]) -> None:
    """The reference validator of the OpenAPI 3 schema (a dev dependency) agrees."""
    import openapi_spec_validator

    openapi_spec_validator.validate(copy.deepcopy(doc))


# ---------------------------------------------------------------------------------------------
# The document against the aiohttp router
# ---------------------------------------------------------------------------------------------


class _NullStore:
    healthy = True

    def save_device(self, record: DeviceRecord) -> None: ...

    def add_event(self, event: NewEvent) -> EventRecord:
        raise AssertionError("no events in this test")

    def add_command(self, record: CommandRecord) -> None: ...

    def update_command(self, record: CommandRecord) -> None: ...

    async def query_events(self, device_id: str, *, limit: int, before: int | None = None,
                           event: str | None = None) -> list[EventRecord]:
        return []


class _NoBroker:
    is_connected = False

    async def publish_command(self, product_id: str, device_id: str, body: dict[str, Any], encoding: str) -> None:
        raise AssertionError("nothing is published in this test")


def minimal_context(tokens: list[str] | None = None) -> HttpContext:
    catalog: Catalog = load_catalog(PRODUCTS_DIR)
    metrics = Metrics()
    store = _NullStore()
    registry = DeviceRegistry(catalog, store, metrics, offline_after_s=0)
    broker = _NoBroker()
    context = HttpContext(
        version=deviceagentd.__version__,
        catalog=catalog,
        registry=registry,
        commands=CommandService(registry, store, broker, metrics),
        store=store,
        metrics=metrics,
        broker=broker,
        broker_detail=dict,
        tokens=tokens or [],
    )
    return context


def minimal_app(tokens: list[str] | None = None) -> web.Application:
    """The HTTP API as a gateway with speakers configured serves it (voice platform routes too)."""
    app = create_app(minimal_context(tokens))
    add_voice_platform_routes(app, cast(VoicePlatform, object()))
    return app


def router_operations(app: web.Application) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        resource = route.resource
        assert resource is not None
        found.add((route.method.lower(), resource.canonical))
    return found


MAIN_SERVER = f"http://{HttpConfig().listen}"
VOICE_SERVER = f"http://{VoiceConfig().listen}"


def main_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """The operations on the main port: those whose path item names no servers of its own, or
    names the main port among them."""
    return {
        (method, path) for path, method, _, item in operations(doc)
        if "servers" not in item or any(server["url"] == MAIN_SERVER for server in item["servers"])
    }


def voice_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """The operations whose path item lists the voice port among its servers."""
    return {
        (method, path) for path, method, _, item in operations(doc)
        if any(server["url"] == VOICE_SERVER for server in item.get("servers", []))
    }


def test_every_route_is_documented_and_every_documented_route_exists(doc: dict[str, Any]) -> None:
    in_router = router_operations(minimal_app())
    in_document = main_operations(doc)
    assert in_router, "the router has no routes?"
    assert in_router - in_document == set(), "routes missing from openapi.json"
    assert in_document - in_router == set(), "openapi.json documents routes the server does not have"


def minimal_voice_app() -> web.Application:
    """The voice port as the daemon serves it: the shared agent routes, /ws/voice and /xiaozhi/ota/."""
    context = minimal_context()
    voice = VoiceService(VoiceConfig(), cast(Agent, None), context.metrics, Clock(), environ={})
    return create_voice_app(context, voice)


def test_the_voice_port_serves_exactly_the_operations_documented_there(doc: dict[str, Any]) -> None:
    assert [server["url"] for server in doc["servers"]] == [MAIN_SERVER]
    on_voice_port = router_operations(minimal_voice_app())
    # The voice WebSocket is the AsyncAPI document's voice channel, on the same port.
    asyncapi = load_asyncapi()
    socket = asyncapi["channels"]["voice"]["address"]
    assert asyncapi["servers"]["voice"]["host"] == VoiceConfig().listen
    assert ("get", socket) in on_voice_port and socket not in doc["paths"]
    assert on_voice_port - {("get", socket)} == voice_operations(doc) == {
        ("post", "/api/chat"), ("post", "/api/vision/frames"), ("get", "/xiaozhi/ota/"), ("post", "/xiaozhi/ota/")}
    main_port = router_operations(minimal_app())
    for path, method, op, item in operations(doc):
        if (method, path) in on_voice_port:
            servers = [server["url"] for server in item["servers"]]
            assert servers == ([MAIN_SERVER, VOICE_SERVER] if (method, path) in main_port else [VOICE_SERVER])
            assert "voice port" in op["description"], f"{method.upper()} {path}: say it is on the voice port"


async def test_served_document_equals_the_file(aiohttp_client: Any, doc: dict[str, Any]) -> None:
    client = await aiohttp_client(minimal_app())
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert json.loads(await resp.text()) == doc


async def test_served_document_needs_the_token_when_tokens_are_set(aiohttp_client: Any, doc: dict[str, Any]) -> None:
    client = await aiohttp_client(minimal_app([TOKEN]))
    resp = await client.get("/api/openapi.json")
    assert resp.status == 401
    resp = await client.get("/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    assert await resp.json() == doc


# ---------------------------------------------------------------------------------------------
# The document against a real daemon: every answer validates against what is documented
# ---------------------------------------------------------------------------------------------


def match_path(doc: dict[str, Any], path: str) -> str:
    template: str
    for template in doc["paths"]:
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template
    raise AssertionError(f"no documented path matches {path}")


class Conformance:
    """Calls a running daemon and checks every answer against the document."""

    def __init__(self, doc: dict[str, Any], gateway: RunningDaemon, headers: dict[str, str] | None = None) -> None:
        self.doc = doc
        self.gateway = gateway
        self.headers = headers or {}
        self.seen: set[tuple[str, str, str]] = set()
        # Kinds of chat stream events seen: the event names, plus tool_result:failed and done:interrupted.
        self.events_seen: set[str] = set()

    async def call(self, method: str, path: str, expect: int, *, json_body: Any = None, data: Any = None,
                   headers: dict[str, str] | None = None, voice: bool = False, until: str | None = None) -> Any:
        """The decoded answer: JSON, text, or for a chat stream its (event, data) list.

        `voice`: call the voice port, which must be documented for that operation. `until`: a
        stream that does not end (/api/stream) is read up to the first event of this name."""
        all_headers = {**self.headers, **(headers or {})}
        url = (self.gateway.voice_url if voice else self.gateway.base_url) + path
        async with self.gateway.session.request(method, url, json=json_body, data=data,
                                                headers=all_headers) as resp:
            if until is not None and resp.status == 200:
                text = await read_stream_until(resp, until)
            else:
                text = await resp.text()
            content_type = resp.content_type
            status = resp.status
            response_headers = resp.headers
        where = f"{method} {'voice port ' if voice else ''}{path} → {status}"
        assert status == expect, f"{where}: {text}"
        template = match_path(self.doc, path.split("?")[0])
        if voice:
            assert (method.lower(), template) in voice_operations(self.doc), f"{where}: not documented there"
        op = self.doc["paths"][template][method.lower()]
        assert str(status) in op["responses"], f"{method} {template} answered {status}, which is not documented"
        response = deref(self.doc, op["responses"][str(status)])
        for name, header in response.get("headers", {}).items():
            assert name in response_headers, f"{where}: documented header {name} missing"
            assert_valid(self.doc, header["schema"], response_headers[name], f"{where}: header {name}")
        if status == 304:
            assert text == "", f"{where}: a 304 has no body"
            self.seen.add((method.lower(), template, str(status)))
            return text
        assert content_type in response["content"], f"{method} {template} {status}: content type {content_type}"
        schema = response["content"][content_type]["schema"]
        body: Any = json.loads(text) if content_type == "application/json" else text
        if content_type == "text/event-stream":
            for index, item in enumerate(sse_items(text)):
                assert_valid(self.doc, schema, item, f"{where} event {index}")
        else:
            assert_valid(self.doc, schema, body, where)
        if content_type == "text/event-stream" and template == "/api/stream":
            body = parse_sse(text)
            check_live_stream(self.doc, body, where)
        elif content_type == "text/event-stream":

            body = parse_sse(text)
            check_chat_stream(self.doc, body, where)
            for name, data in body:
                self.events_seen.add(name)
                if name == "tool_result" and not data["ok"]:
                    self.events_seen.add("tool_result:failed")
                if name == "done" and data.get("interrupted"):
                    self.events_seen.add("done:interrupted")
        if (request_body := op.get("requestBody")) and status in (200, 201) and json_body is not None:
            assert_valid(self.doc, request_body["content"]["application/json"]["schema"], json_body,
                         f"accepted request body of {method} {path}")
        self.seen.add((method.lower(), template, str(status)))
        return body


@pytest.fixture
async def conformance_gateway(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    # Small limits, so each can be crossed with a small request; a turn that waits for a device that never
    # answers ends after 3 s.
    gateway = await start_daemon(broker.url, tmp_path / "state", http_tokens=[TOKEN], http_max_body_bytes=2048,
                                 agent_max_message_chars=500, agent_turn_timeout_s=3, vision_max_frame_bytes=4096,
                                 schedules_max_schedules=4, voiceplatform_rooms_file=ROOMS_FILE)
    try:
        yield gateway
    finally:
        await gateway.stop()


async def start_device(broker: MosquittoBroker, product: str, device_id: str, **options: Any) -> SimulatedDevice:
    spec = load_spec_file(PRODUCTS_DIR / f"{product}.json")
    sim = SimulatedDevice(spec, device_id, SimulatorOptions(
        url=broker.url, client_id=f"sim-{device_id}-{uuid.uuid4().hex[:8]}", heartbeat_s=0, **options))
    await asyncio.wait_for(sim.start(), WAIT_S)
    return sim


async def test_real_answers_match_the_document(
    doc: dict[str, Any], broker: MosquittoBroker, conformance_gateway: RunningDaemon, tmp_path: Path
) -> None:
    gw = conformance_gateway
    registry = gw.daemon.registry
    check = Conformance(doc, gw, {"Authorization": f"Bearer {TOKEN}"})
    thermostat = await start_device(broker, "thermostat", "thermostat-001")
    mute = await start_device(broker, "thermostat", "thermostat-002", answer=False)
    gone = await start_device(broker, "light", "light-001")
    try:
        await wait_until(lambda: registry.online_count == 3, WAIT_S)
        await gone.stop()
        await wait_until(lambda: registry.online_count == 2, WAIT_S)
        await thermostat.emit_event("temperature_alert", {"temperature": 38.5})
        await thermostat.emit_event("door_opened", {"by": "test"})

        await check.call("GET", "/api/health", 200, headers={"Authorization": ""})
        await check.call("GET", "/api/products", 200)
        for product in load_catalog(PRODUCTS_DIR).products:
            await check.call("GET", f"/api/products/{product}", 200)
        await check.call("GET", "/api/products/fridge", 404)
        for query in ("", "?status=online", "?status=offline"):
            await check.call("GET", f"/api/products/thermostat/devices{query}", 200)
        await check.call("GET", "/api/products/thermostat/devices?status=sleeping", 400)
        await check.call("GET", "/api/products/fridge/devices", 404)
        for device in ("thermostat-001", "light-001"):
            await check.call("GET", f"/api/devices/{device}", 200)
        await check.call("GET", "/api/devices/nobody", 404)

        commands = "/api/devices/thermostat-001/commands"
        seed = {"command": "set_target_temperature", "params": {"target_temperature": 24}, "timeoutMs": 30000}
        await check.call("POST", commands, 200, json_body=seed)
        await check.call("POST", commands, 200, json_body={"command": "set_mode", "params": {"mode": "eco"},
                                                           "requestId": "conformance-1"})
        await check.call("POST", commands, 409, json_body={"command": "set_mode", "params": {"mode": "eco"},
                                                           "requestId": "conformance-1"})
        bad: dict[str, Any]
        for bad in ({"command": "set_target_temperature", "params": {"target_temperature": 99}},
                    {"command": "warp"}, {"params": {}}, {"command": "set_mode", "priority": 1},
                    {"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": 50}):
            await check.call("POST", commands, 400, json_body=bad)
        json_header = {"Content-Type": "application/json"}
        await check.call("POST", commands, 400, data=b"{not json", headers=json_header)
        await check.call("POST", commands, 415, data=b"{}", headers={"Content-Type": "text/plain"})
        await check.call("POST", commands, 413, data=json.dumps({"command": "x" * 4000}).encode(),
                         headers=json_header)
        await check.call("POST", "/api/devices/nobody/commands", 404, json_body=seed)
        await check.call("POST", "/api/devices/light-001/commands", 409, json_body={"command": "turn_on"})
        await check.call("POST", "/api/devices/thermostat-002/commands", 504,
                         json_body={**seed, "timeoutMs": 300})

        page = await check.call("GET", "/api/devices/thermostat-001/events?limit=1", 200)
        assert page["nextBefore"] is not None
        await check.call("GET", f"/api/devices/thermostat-001/events?before={page['nextBefore']}", 200)
        await check.call("GET", "/api/devices/thermostat-001/events?event=temperature_alert", 200)
        await check.call("GET", "/api/devices/thermostat-001/events?limit=0", 400)
        await check.call("GET", "/api/devices/nobody/events", 404)
        await check.call("GET", "/api/openapi.json", 200)
        await check.call("GET", "/metrics", 200)
        for path in ("/api/products", "/api/products/thermostat", "/api/products/thermostat/devices",
                     "/api/devices/thermostat-001", "/api/devices/thermostat-001/events", "/api/openapi.json",
                     "/metrics"):
            await check.call("GET", path, 401, headers={"Authorization": "Bearer wrong-token-wrong-token"})
        await check.call("POST", commands, 401, json_body=seed, headers={"Authorization": ""})

        await check_agent_routes(check, gw)
        await check_schedule_routes(check, gw)
        await check_site_routes(check, gw)

        # 503 twice: commands while the broker is away, and health.
        port = free_port()
        down = await start_daemon(f"mqtt://127.0.0.1:{port}", tmp_path / "down", wait_subscribed=False)
        try:
            down_check = Conformance(doc, down)
            await down_check.call("GET", "/api/health", 503)
            check.seen |= down_check.seen
        finally:
            await down.stop()

        documented = {
            (method, path, status) for path, method, op, _ in operations(doc) for status in op["responses"]
        }
        # 503 on commands needs a broker that dies mid-test: test_http_api covers it. The voice
        # platform's answers are checked against this document by test_voiceplatform_api.
        unchecked = {d for d in documented if d[1].startswith("/v1.0/")}
        assert documented - check.seen - unchecked == {("post", "/api/devices/{deviceId}/commands", "503")}
        assert check.events_seen == SSE_EVENTS | {"tool_result:failed", "done:interrupted"}
    finally:
        for sim in (thermostat, mute, gone):
            await sim.stop()


async def check_schedule_routes(check: Conformance, gw: RunningDaemon) -> None:
    """Schedules: create every kind, list and page, read, delete, every refusal, and the event of a run."""
    schedules = "/api/schedules"
    command = {"type": "command", "deviceId": "thermostat-001", "command": "set_mode", "params": {"mode": "eco"}}
    soon = await check.call("POST", schedules, 201, json_body={"name": "eco soon", "inSeconds": 1, "action": command})
    daily = await check.call("POST", schedules, 201, json_body={"at": "23:00", "repeat": "weekdays",
                                                                "action": command})
    await check.call("POST", schedules, 201, json_body={"cron": "*/5 * * * *", "action": command})
    first = await check.call("GET", f"{schedules}?limit=1", 200)
    assert first["nextAfter"] == soon["id"] and first["total"] == 3
    await check.call("GET", f"{schedules}?limit=1&after={first['nextAfter']}", 200)
    await check.call("GET", f"{schedules}?limit=0", 400)
    await check.call("GET", f"{schedules}?after=sch-nobody", 400)
    await check.call("GET", f"{schedules}/{daily['id']}", 200)
    await check.call("GET", f"{schedules}/sch-nobody", 404)
    for bad in ({"action": command}, {"inSeconds": 5, "at": "07:00", "action": command},
                {"at": "2020-01-01T07:00", "action": command}, {"inSeconds": 5, "action": {"type": "explode"}},
                {"inSeconds": 5, "action": {**command, "deviceId": "nobody"}}, {"inSeconds": 5, "colour": 1}):
        await check.call("POST", schedules, 400, json_body=bad)
    json_header = {"Content-Type": "application/json"}
    await check.call("POST", schedules, 400, data=b"{not json", headers=json_header)
    await check.call("POST", schedules, 415, data=b"{}", headers={"Content-Type": "text/plain"})
    await check.call("POST", schedules, 413, data=json.dumps({"name": "x" * 4000}).encode(), headers=json_header)
    await check.call("POST", schedules, 201, json_body={"at": "06:00", "repeat": "daily", "action": command})
    await check.call("POST", schedules, 409, json_body={"at": "06:30", "repeat": "daily", "action": command})
    await check.call("DELETE", f"{schedules}/{daily['id']}", 200)
    await check.call("DELETE", f"{schedules}/{daily['id']}", 404)
    wrong = {"Authorization": "Bearer wrong-token-wrong-token"}
    await check.call("GET", schedules, 401, headers=wrong)
    await check.call("POST", schedules, 401, headers=wrong, json_body={"inSeconds": 5, "action": command})
    await check.call("GET", f"{schedules}/{soon['id']}", 401, headers=wrong)
    await check.call("DELETE", f"{schedules}/{soon['id']}", 401, headers=wrong)
    # The one-off schedule ran: its event is in the device's events, as the document says.
    await wait_until(lambda: gw.daemon.schedules.service().get(soon["id"]) is None, WAIT_S)
    page = await check.call("GET", "/api/devices/thermostat-001/events?event=schedule_fired", 200)
    [fired] = page["events"]
    assert (fired["source"], fired["data"]["outcome"], fired["data"]["scheduleId"]) == ("schedule", "ok", soon["id"])


async def check_site_routes(check: Conformance, gw: RunningDaemon) -> None:
    """The devices across products, a device's command log and the live stream (thermostat-001 answers,
    light-001 is offline, both have stored events)."""
    wrong = {"Authorization": "Bearer wrong-token-wrong-token"}
    page = await check.call("GET", "/api/devices?limit=1", 200)
    assert page["nextAfter"] is not None
    await check.call("GET", f"/api/devices?after={page['nextAfter']}&status=online&productId=thermostat&q=00", 200)
    await check.call("GET", "/api/devices?limit=0", 400)
    await check.call("GET", "/api/devices?productId=fridge", 404)
    await check.call("GET", "/api/devices", 401, headers=wrong)

    log = await check.call("GET", "/api/devices/thermostat-001/commands?limit=1", 200)
    assert log["nextBefore"] is not None
    await check.call("GET", f"/api/devices/thermostat-001/commands?before={log['nextBefore']}", 200)
    await check.call("GET", "/api/devices/thermostat-001/commands?before=yesterday", 400)
    await check.call("GET", "/api/devices/nobody/commands", 404)
    await check.call("GET", "/api/devices/thermostat-001/commands", 401, headers=wrong)

    replayed = await check.call("GET", "/api/stream?lastEventId=0", 200, until="ready")
    assert {"lifecycle", "event", "ready"} <= {name for name, _ in replayed}
    live = asyncio.create_task(check.call("GET", "/api/stream?deviceId=thermostat-001", 200, until="command"))
    await wait_until(lambda: "deviceagentd_stream_clients 1\n" in gw.daemon.metrics.render(), WAIT_S)
    await check.call("POST", "/api/devices/thermostat-001/commands", 200,
                     json_body={"command": "set_target_temperature", "params": {"target_temperature": 22}})
    events = await asyncio.wait_for(live, WAIT_S)
    assert [name for name, _ in events][-1] == "command"
    await check.call("GET", "/api/stream?kind=states", 400)
    await check.call("GET", "/api/stream?productId=fridge", 404)
    await check.call("GET", "/api/stream", 401, headers=wrong)

    # The console's files, for anyone; what it reads, with the token.
    for path in ("/", "/console/app.js", "/console/app.css"):
        served = await check.call("GET", path, 200, headers={"Authorization": ""})
        assert served
        async with gw.session.get(gw.base_url + path) as resp:
            etag = resp.headers["ETag"]
        await check.call("GET", path, 304, headers={"Authorization": "", "If-None-Match": etag})
    await check.call("GET", "/console/nope.js", 404, headers={"Authorization": ""})
    await check.call("GET", "/console/..%2Fhttp%2Fopenapi.json", 404, headers={"Authorization": ""})
    gateway_facts = await check.call("GET", "/api/gateway", 200)
    assert gateway_facts["voice"]["port"] == gw.daemon.voice_port
    await check.call("GET", "/api/gateway", 401, headers=wrong)
    view = await check.call("GET", "/api/voice-platform", 200)
    assert [s["voiceId"] for s in view["speakers"]] == ["speaker-101"]
    await check.call("GET", "/api/voice-platform", 401, headers=wrong)
    run = await check.call("POST", "/api/voice-platform/scenes/sleep-101/run", 200)
    assert run["ok"] is False  # the room's devices never connected here
    await check.call("POST", "/api/voice-platform/scenes/party/run", 404)
    await check.call("POST", "/api/voice-platform/scenes/sleep-101/run", 401, headers=wrong)
    asyncapi = await check.call("GET", "/api/asyncapi.json", 200)
    assert asyncapi["asyncapi"] == "3.0.0"
    await check.call("GET", "/api/asyncapi.json", 401, headers=wrong)
    await check_xiaozhi_ota(check, gw)


async def check_xiaozhi_ota(check: Conformance, gw: RunningDaemon) -> None:
    """/xiaozhi/ota/ on the voice port, asked as stock XiaoZhi firmware asks it (test_voice_ota has
    the firmware's side): its system information in the body, the token in the header or the URL."""
    ota = "/xiaozhi/ota/"
    firmware = {"Device-Id": "a0:85:e3:11:22:33", "Client-Id": "9c1d8f0e-6a55-4d7e-8d0e-0f5c8a6b1f2a",
                "Activation-Version": "1", "User-Agent": "bread-compact-wifi/2.0.3", "Accept-Language": "zh-CN"}
    [example] = doc_example(check.doc, "post", ota)
    answer = await check.call("POST", ota, 200, voice=True, json_body=example, headers=firmware)
    voice_host = gw.voice_url.split("//", 1)[1]
    assert answer["websocket"] == {"url": f"ws://{voice_host}/ws/voice", "token": TOKEN}
    assert answer["firmware"] == {"version": example["application"]["version"], "url": ""}
    answer = await check.call("GET", f"{ota}?authorization={TOKEN}", 200, voice=True,
                              headers={**firmware, "Authorization": "", "Device-Version": "1.9.0"})
    assert answer["firmware"]["version"] == "1.9.0" and answer["websocket"]["token"] == TOKEN
    await check.call("POST", ota, 401, voice=True, json_body=example, headers={"Authorization": ""})
    await check.call("GET", f"{ota}?authorization=wrong-token", 401, voice=True, headers={"Authorization": ""})


def doc_example(doc: dict[str, Any], method: str, path: str) -> list[Any]:
    """The request body examples of one operation."""
    content = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
    return [example["value"] for example in content["examples"].values()]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def check_agent_routes(check: Conformance, gw: RunningDaemon) -> None:
    """Chat, sessions and vision frames, with the offline engine: thermostat-001 answers commands,
    thermostat-002 never does (a turn that commands it lasts until the 3 s turn timeout), light-001 is
    offline."""
    json_header = {"Content-Type": "application/json"}

    # Chat: the seed request (two tool calls, a reply), a failing tool call, the voice port.
    chat = "/api/chat"
    seed = {"message": "Check the current temperature and set the target temperature to 24", "stream": True,
            "sessionId": "demo-session", "metadata": {"productId": "thermostat", "deviceId": "thermostat-001"}}
    events = await check.call("POST", chat, 200, json_body=seed)
    assert [data["name"] for name, data in events if name == "tool_call"] == ["get_device_state", "send_command"]
    assert events[-1][0] == "done" and "24" in events[-1][1]["text"]
    events = await check.call("POST", chat, 200, json_body={"message": "turn on light-001", "stream": True,
                                                           "sessionId": "light-session"})
    assert any(name == "tool_result" and not data["ok"] for name, data in events)
    events = await check.call("POST", chat, 200, voice=True, json_body={
        "message": "what is the current temperature", "stream": True, "metadata": {"deviceId": "thermostat-001"}})
    assert events[0][1]["sessionId"].startswith("session-")

    # Vision frames: every format, a data URL, the voice port, then every refusal.
    frames = "/api/vision/frames"
    upload = {"sessionId": "demo-session", "deviceId": "thermostat-001", "mimeType": "image/png",
              "imageBase64": b64(PNG), "source": "camera"}
    frame = await check.call("POST", frames, 200, json_body=upload)
    for mime_type, image in (("image/jpeg", JPEG), ("image/webp", WEBP)):
        answer = await check.call("POST", frames, 200, json_body={"sessionId": "demo-session", "mimeType": mime_type,
                                                                  "imageBase64": b64(image)})
        assert answer["mimeType"] == mime_type and answer["source"] == "camera"
    await check.call("POST", frames, 200, voice=True,
                     json_body={**upload, "imageBase64": "data:image/png;base64," + b64(PNG)})
    refused: list[tuple[dict[str, Any], str]] = [
        ({key: value for key, value in upload.items() if key != "sessionId"}, "invalid_request"),
        ({**upload, "colour": "red"}, "invalid_request"),
        ({**upload, "mimeType": "image/gif"}, "unsupported_mime_type"),
        ({**upload, "imageBase64": "not base64!!"}, "invalid_base64"),
        ({**upload, "imageBase64": b64(PNG).rstrip("=")}, "invalid_base64"),
        ({**upload, "mimeType": "image/jpeg"}, "mime_mismatch"),
        ({**upload, "imageBase64": "data:image/jpeg;base64," + b64(PNG)}, "mime_mismatch"),
        ({**upload, "imageBase64": "data:image/png;base64,"}, "empty_frame"),
    ]
    for body, code in refused:
        answer = await check.call("POST", frames, 400, json_body=body)
        assert answer["error"]["code"] == code, (body, answer)
    answer = await check.call("POST", frames, 400, data=b"{not json", headers=json_header)
    assert answer["error"]["code"] == "invalid_json"
    answer = await check.call("POST", frames, 413, json_body={**upload, "imageBase64": b64(PNG + bytes(5000))})
    assert answer["error"]["code"] == "frame_too_large"
    answer = await check.call("POST", frames, 413, json_body={**upload, "imageBase64": "A" * 100_000})
    assert answer["error"]["code"] == "payload_too_large"
    await check.call("POST", frames, 415, data=b"{}", headers={"Content-Type": "text/plain"})
    await check.call("POST", frames, 401, json_body=upload, headers={"Authorization": ""})
    await check.call("POST", frames, 401, json_body=upload, headers={"Authorization": ""}, voice=True)

    # Chat about the frame, then every refusal before the stream.
    await check.call("POST", chat, 200, json_body={
        "message": "Use this image to check whether the device screen looks abnormal", "stream": True,
        "sessionId": "demo-session", "visionRefs": frame["visionRefs"]})
    unknown = "frame-0123456789abcdef0123456789abcdef"
    answer = await check.call("POST", chat, 404, json_body={"message": "look", "stream": True,
                                                           "visionRefs": [{"frameId": unknown}]})
    assert answer["error"]["details"] == {"frameId": unknown}
    hi = {"message": "hi", "stream": True}
    bad: dict[str, Any]
    for bad in ({"stream": True}, {"message": " ", "stream": True}, {"message": "x" * 501, "stream": True},
                {"message": "hi"}, {**hi, "stream": False}, {**hi, "stream": "true"}, {**hi, "sessionId": ""},
                {**hi, "sessionId": "s" * 129}, {**hi, "sessionId": "a\u0007b"}, {**hi, "metadata": "thermostat"},
                {**hi, "metadata": {"deviceId": 7}}, {**hi, "visionRefs": "frame-1"},
                {**hi, "visionRefs": [{"frameId": unknown}] * 9}, {**hi, "visionRefs": [{"source": "camera"}]},
                {**hi, "colour": "red"}):
        answer = await check.call("POST", chat, 400, json_body=bad)
        assert answer["error"]["details"][0]["field"], answer
    await check.call("POST", chat, 400, data=b"{not json", headers=json_header)
    await check.call("POST", chat, 413, json_body={"message": "x" * 3000, "stream": True})
    await check.call("POST", chat, 415, data=json.dumps(hi).encode(), headers={"Content-Type": "text/plain"})
    await check.call("POST", chat, 401, json_body=hi, headers={"Authorization": ""})
    await check.call("POST", chat, 401, json_body=hi, headers={"Authorization": "Bearer wrong"}, voice=True)

    # A busy session: 409 for a second message, interrupt ends the first with done + interrupted.
    slow = {"message": "set the mode of thermostat-002 to eco", "stream": True, "sessionId": "busy-session"}
    running = asyncio.create_task(check.call("POST", chat, 200, json_body=slow))
    await wait_until(lambda: gw.daemon.agent.busy("busy-session"), WAIT_S)
    answer = await check.call("POST", chat, 409, json_body={**slow, "message": "hello"})
    assert answer["error"]["details"] == {"sessionId": "busy-session"}
    interrupt = "/api/sessions/busy-session/interrupt"
    assert await check.call("POST", interrupt, 200) == {"interrupted": True}
    events = await asyncio.wait_for(running, WAIT_S)
    assert events[-1][0] == "done" and events[-1][1]["interrupted"] is True
    assert await check.call("POST", interrupt, 200) == {"interrupted": False}
    # Left alone, the same turn ends with an error event when the turn times out.
    events = await check.call("POST", chat, 200, json_body={**slow, "sessionId": "timeout-session"})
    assert events[-1][0] == "error" and events[-1][1]["code"] == "turn_timeout"

    # Sessions: history, interrupt and delete, and what they refuse.
    history = await check.call("GET", "/api/sessions/demo-session/history", 200)
    assert history["sessionId"] == "demo-session"
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"] * 2
    assert [c["name"] for c in history["messages"][1]["toolCalls"]] == ["get_device_state", "send_command"]
    assert len((await check.call("GET", "/api/sessions/demo-session/history?limit=1", 200))["messages"]) == 1
    busy = await check.call("GET", "/api/sessions/busy-session/history", 200)
    assert busy["messages"][-1]["interrupted"] is True
    for query in ("?limit=0", "?limit=1001", "?limit=ten"):
        await check.call("GET", f"/api/sessions/demo-session/history{query}", 400)
    assert await check.call("DELETE", "/api/sessions/light-session", 200) == {"deleted": True}
    for method, path in (("GET", "/api/sessions/light-session/history"), ("GET", "/api/sessions/nobody/history"),
                         ("POST", "/api/sessions/nobody/interrupt"), ("DELETE", "/api/sessions/nobody"),
                         ("DELETE", "/api/sessions/light-session")):
        answer = await check.call(method, path, 404)
        assert answer["error"]["code"] == "session_not_found"
    for method, path in (("GET", "/api/sessions/demo-session/history"), ("POST", interrupt),
                         ("DELETE", "/api/sessions/demo-session")):
        await check.call(method, path, 401, headers={"Authorization": "Bearer wrong-token-wrong-token"})


async def test_times_in_answers_are_parseable_iso_8601(
    broker: MosquittoBroker, conformance_gateway: RunningDaemon
) -> None:
    gw = conformance_gateway
    sim = await start_device(broker, "switch", "switch-iso")
    try:
        await wait_until(lambda: gw.daemon.registry.online_count == 1, WAIT_S)
        status, device = await gw.request("GET", "/api/devices/switch-iso",
                                          headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        first = datetime.fromisoformat(device["firstSeen"])
        last = datetime.fromisoformat(device["lastSeen"])
        offset = first.utcoffset()
        assert offset is not None and offset.total_seconds() == 0
        assert first <= last
    finally:
        await sim.stop()
