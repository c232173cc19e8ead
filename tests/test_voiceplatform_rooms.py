"""The rooms file: speakers, rooms, devices and scenes, and every problem reported with its path."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_harness import PRODUCTS_DIR

from deviceagentd.config import ConfigError
from deviceagentd.core.catalog import Catalog, load_catalog
from deviceagentd.voiceplatform.idempotency import IdempotencyCache
from deviceagentd.voiceplatform.rooms import load_rooms

REPO = Path(__file__).resolve().parent.parent
VOICE_PRODUCTS = frozenset({"light", "curtain", "air_conditioner", "thermostat", "switch"})


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(PRODUCTS_DIR)


def problems_of(tmp_path: Path, catalog: Catalog, text: str, voice: frozenset[str] = VOICE_PRODUCTS) -> list[str]:
    path = tmp_path / "rooms.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_rooms(path, catalog, voice)
    return [str(p) for p in caught.value.problems]


def test_the_shipped_example_loads(catalog: Catalog) -> None:
    rooms = load_rooms(REPO / "etc" / "deviceagentd" / "voice-platform.toml", catalog, VOICE_PRODUCTS)
    speaker = rooms.speakers["speaker-101"]
    room = rooms.room_of(speaker)
    assert room.name == "Room 101"
    assert list(room.devices) == ["light-101", "curtain-101", "ac-101", "thermostat-001"]
    assert room.devices["light-101"].aliases == ("reading light", "lamp")
    assert room.devices["ac-101"].position is None
    sleep = room.scenes["SCENE#sleep-101"]
    assert (sleep.name, sleep.parallel, len(sleep.steps)) == ("Sleep mode", False, 3)
    assert sleep.steps[2].params == {"target_temperature": 24}
    assert room.scenes["SCENE#welcome-101"].parallel is True
    assert rooms.known_device("curtain-101") and not rooms.known_device("nope")


def test_a_scene_id_may_be_given_with_its_prefix(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "rooms.toml"
    path.write_text("""
[[rooms]]
id = "1"
devices = [{ device_id = "l1", product = "light", name = "lamp" }]
scenes = [{ id = "SCENE#night", name = "Night", steps = [{ device_id = "l1", command = "turn_off" }] }]
""")
    rooms = load_rooms(path, catalog, VOICE_PRODUCTS)
    assert list(rooms.rooms["1"].scenes) == ["SCENE#night"]
    assert rooms.rooms["1"].name == "1"


def test_every_problem_is_reported_with_its_path(tmp_path: Path, catalog: Catalog) -> None:
    problems = problems_of(tmp_path, catalog, """
colour = "blue"

[[rooms]]
id = "1"
devices = [
  { device_id = "l1", product = "light", name = "lamp", color = "red" },
  { device_id = "l1", product = "light", name = "lamp again" },
  { device_id = "x1", product = "toaster", name = "toaster" },
  { device_id = "s1", product = "switch" },
  { device_id = "t1", product = "thermostat", name = "t", aliases = "not a list" },
]
scenes = [
  { id = "a", name = "A", steps = [
      { device_id = "l1", command = "explode" },
      { device_id = "zz", command = "turn_off" },
      { device_id = "l1", command = "set_brightness", params = { brightness = 500 } },
  ] },
  { id = "a", name = "A again", steps = [{ device_id = "l1", command = "turn_on" }] },
  { id = "b", name = "Empty", steps = [] },
  { id = "c", name = "Bad flag", parallel = "yes", steps = [{ device_id = "l1", command = "turn_on" }] },
]

[[rooms]]
id = "1"

[[speakers]]
voice_id = "sp"
code = "brand"
industry_type = "home"
room = "9"

[[speakers]]
code = "brand"
room = "1"
""")
    text = "\n".join(problems)
    expected = [
        "$.colour: unknown key",
        "rooms[0].devices[0].color: unknown key",
        "rooms[0].devices[1].device_id: device 'l1' is listed twice",
        "rooms[0].devices[2].product: unknown product 'toaster'",
        "rooms[0].devices[3].name: is required",
        "rooms[0].devices[4].aliases: must be a list of non-empty strings",
        "rooms[0].scenes[0].steps[0].command: 'explode' is not a command of light",
        "rooms[0].scenes[0].steps[1].device_id: device 'zz' is not one of this room's devices",
        "rooms[0].scenes[0].steps[2].params.brightness:",
        "rooms[0].scenes[1].id: scene id 'SCENE#a' is already used",
        "rooms[0].scenes[2].steps: a scene needs at least one step",
        "rooms[0].scenes[3].parallel: must be true or false",
        "rooms[1].id: room '1' is defined twice",
        "speakers[0].industry_type: must be one of hotel",
        "speakers[0].room: no room '9' in this file",
        "speakers[1].voice_id: is required",
    ]
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert all(p.startswith(str(tmp_path / "rooms.toml")) for p in problems)


def test_a_product_without_a_voice_section_cannot_be_in_a_room(tmp_path: Path, catalog: Catalog) -> None:
    problems = problems_of(tmp_path, catalog, """
[[rooms]]
id = "1"
devices = [{ device_id = "l1", product = "light", name = "lamp" }]
""", voice=frozenset({"switch"}))
    assert problems == [f"{tmp_path / 'rooms.toml'}: rooms[0].devices[0].product: product 'light' has no voice "
                        "section, so speakers cannot use it"]


def test_speakers_need_a_known_room_and_unique_ids(tmp_path: Path, catalog: Catalog) -> None:
    problems = problems_of(tmp_path, catalog, """
[[rooms]]
id = "1"
[[speakers]]
voice_id = "sp"
code = "b"
room = "1"
[[speakers]]
voice_id = "sp"
code = "b"
room = "1"
[[speakers]]
voice_id = "sp2"
code = ""
room = "1"
""")
    assert any("speakers[1].voice_id: speaker 'sp' is defined twice" in p for p in problems)
    assert any("speakers[2].code: must be a non-empty string" in p for p in problems)


def test_scene_step_params_room_ids_and_speakers_are_checked(tmp_path: Path, catalog: Catalog) -> None:
    problems = problems_of(tmp_path, catalog, """
speakers = "sp"

[[rooms]]
id = "1"
devices = [{ device_id = "l1", product = "light", name = "lamp" }]
scenes = [{ id = "night", name = "Night", steps = [{ device_id = "l1", command = "turn_off", params = 5 }] }]

[[rooms]]
name = "No id"
""")
    source = tmp_path / "rooms.toml"
    assert problems == [
        f"{source}: rooms[0].scenes[0].steps[0].params: must be a table",
        f"{source}: rooms[1].id: is required",
        f"{source}: speakers: must be an array of tables ([[...]])",
    ]


def test_unreadable_and_invalid_files(tmp_path: Path, catalog: Catalog) -> None:
    with pytest.raises(ConfigError) as caught:
        load_rooms(tmp_path / "missing.toml", catalog, VOICE_PRODUCTS)
    assert "cannot read" in str(caught.value)
    assert problems_of(tmp_path, catalog, "[[rooms]\nid=") [0].startswith("voiceplatform.rooms_file:")
    assert "array of tables" in problems_of(tmp_path, catalog, 'rooms = "101"')[0]


async def test_idempotency_cache_runs_once_per_key_within_the_window() -> None:
    now = [0.0]
    cache = IdempotencyCache(window_s=10, max_entries=3, monotonic=lambda: now[0])
    runs: list[str] = []

    async def work(tag: str) -> dict[str, str]:
        runs.append(tag)
        await asyncio.sleep(0.01)
        return {"tag": tag}

    first, second = await asyncio.gather(cache.run(("sp", "m1"), lambda: work("a")),
                                         cache.run(("sp", "m1"), lambda: work("b")))
    assert first == second == {"tag": "a"} and runs == ["a"]
    assert await cache.run(("other", "m1"), lambda: work("c")) == {"tag": "c"}  # keys are per speaker
    now[0] = 11.0
    assert await cache.run(("sp", "m1"), lambda: work("d")) == {"tag": "d"}  # window passed
    for i in range(5):
        await cache.run(("sp", f"x{i}"), lambda: work("e"))
    assert len(cache) == 3  # bounded
    assert cache.replays == 1


async def test_idempotency_cache_forgets_a_call_that_failed_without_an_answer() -> None:
    cache = IdempotencyCache(window_s=10)

    async def boom() -> dict[str, str]:
        raise RuntimeError("no answer")

    with pytest.raises(RuntimeError):
        await cache.run(("sp", "m"), boom)

    async def fine() -> dict[str, str]:
        return {"ok": "yes"}

    assert await cache.run(("sp", "m"), fine) == {"ok": "yes"}


async def test_idempotency_off_runs_every_time() -> None:
    cache = IdempotencyCache(window_s=0)
    runs = []

    async def work() -> dict[str, int]:
        runs.append(1)
        return {"n": len(runs)}

    await cache.run(("sp", "m"), work)
    await cache.run(("sp", "m"), work)
    assert len(runs) == 2 and len(cache) == 0


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deviceagentd", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=REPO, timeout=60)


def test_check_config_reports_rooms_file_problems_and_run_refuses_to_start(tmp_path: Path) -> None:
    rooms = tmp_path / "rooms.toml"
    rooms.write_text('[[rooms]]\nid = "1"\ndevices = [{ device_id = "l1", product = "toaster", name = "t" }]\n')
    env = {"DEVICEAGENTD_VOICEPLATFORM_ROOMS_FILE": str(rooms), "DEVICEAGENTD_STORAGE_DIR": str(tmp_path / "s")}
    checked = run_cli("check-config", env=env)
    assert checked.returncode == 1, checked
    assert f"{rooms}: rooms[0].devices[0].product: unknown product 'toaster'" in checked.stderr
    started = run_cli("run", env=env)
    assert started.returncode == 1, started
    assert "rooms[0].devices[0].product" in started.stderr and "Traceback" not in started.stderr


def test_check_config_checks_voice_sections_even_with_the_api_off(tmp_path: Path) -> None:
    products = tmp_path / "products"
    shutil.copytree(PRODUCTS_DIR, products)
    light = json.loads((products / "light.json").read_text())
    light["voice"]["intents"]["SetBrightness"]["command"] = "set_brightnes"
    (products / "light.json").write_text(json.dumps(light))
    checked = run_cli("check-config", env={"DEVICEAGENTD_PRODUCTS_DIR": str(products)})
    assert checked.returncode == 1, checked
    assert "$.voice.intents.SetBrightness.command" in checked.stderr


def test_check_config_summarises_the_voice_platform(tmp_path: Path) -> None:
    off = run_cli("check-config")
    assert off.returncode == 0, off
    assert "# voice platform off (voiceplatform.rooms_file is empty); voice sections checked: " in off.stdout
    example = REPO / "etc" / "deviceagentd" / "voice-platform.toml"
    on = run_cli("check-config", env={"DEVICEAGENTD_VOICEPLATFORM_ROOMS_FILE": str(example)})
    assert on.returncode == 0, on
    assert f"# voice platform on: 1 speakers, 1 rooms from {example}" in on.stdout


def test_a_room_lists_its_voice_speakers_once_and_each_in_one_room(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "rooms.toml"
    path.write_text("""
[[rooms]]
id = "1"
voice_device_ids = ["aa:01", "aa:02"]
[[rooms]]
id = "2"
""")
    rooms = load_rooms(path, catalog, VOICE_PRODUCTS)
    assert rooms.rooms["1"].voice_device_ids == ("aa:01", "aa:02") and rooms.rooms["2"].voice_device_ids == ()
    room = rooms.room_of_voice_device("aa:02")
    assert room is not None and room.room_id == "1" and rooms.room_of_voice_device("aa:09") is None
    example = load_rooms(REPO / "etc" / "deviceagentd" / "voice-platform.toml", catalog, VOICE_PRODUCTS)
    assert example.rooms["101"].voice_device_ids == ("aa:bb:cc:dd:ee:01",)
    assert problems_of(tmp_path, catalog, """
[[rooms]]
id = "1"
voice_device_ids = ["aa:01", "aa:01"]
[[rooms]]
id = "2"
voice_device_ids = ["aa:01", 7]
[[rooms]]
id = "3"
voice_device_ids = ["aa:02"]
[[rooms]]
id = "4"
voice_device_ids = ["aa:02"]
""") == [
        f"{tmp_path / 'rooms.toml'}: rooms[0].voice_device_ids: lists a speaker twice",
        f"{tmp_path / 'rooms.toml'}: rooms[1].voice_device_ids: must be a list of non-empty strings",
        f"{tmp_path / 'rooms.toml'}: rooms[3].voice_device_ids: speaker 'aa:02' is already in room '3'",
    ]
