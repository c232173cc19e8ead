"""Vision frames: upload checks, files on disk, expiry and purging, in real directories."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import pytest

from deviceagentd.agent.types import ImageInput
from deviceagentd.agent.vision import Frame, FrameError, FrameNotFound, VisionFrames
from deviceagentd.core.clock import Clock
from deviceagentd.core.errors import InvalidInput, NotFound

START_MS = 1_700_000_000_123

# Just enough of each format for the magic-byte check, plus some payload.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(40))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(30)) + b"\xff\xd9"
WEBP = b"RIFF" + (24).to_bytes(4, "little") + b"WEBPVP8 " + bytes(range(16))
assert len(PNG) % 3 == 2  # its base64 ends in one "=", which the padding cases below rely on


class FakeClock(Clock):
    def __init__(self) -> None:
        self.now_ms = START_MS

    def wall_ms(self) -> int:
        return self.now_ms


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "state" / "frames"


@pytest.fixture
def frames(directory: Path, clock: FakeClock) -> VisionFrames:
    return VisionFrames(directory, max_bytes=1024, ttl_s=900, clock=clock)


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize(
    ("mime", "data", "ext"),
    [("image/png", PNG, "png"), ("image/jpeg", JPEG, "jpg"), ("image/webp", WEBP, "webp")],
    ids=["png", "jpeg", "webp"],
)
async def test_good_frame_is_kept_and_loaded(
    frames: VisionFrames, directory: Path, mime: str, data: bytes, ext: str
) -> None:
    frame = await frames.add("s1", "cam-1", mime, b64(data), "doorbell")

    assert re.fullmatch(r"frame-[0-9a-f]{32}", frame.frame_id)
    assert frame == Frame(frame.frame_id, "s1", "cam-1", mime, "doorbell", START_MS, START_MS + 900_000, len(data))
    assert frame.to_json() == {
        "frameId": frame.frame_id,
        "capturedAt": "2023-11-14T22:13:20.123Z",
        "source": "doorbell",
        "mimeType": mime,
    }
    assert files(directory) == sorted([f"{frame.frame_id}.{ext}", f"{frame.frame_id}.json"])
    assert (directory / f"{frame.frame_id}.{ext}").read_bytes() == data

    assert await frames.load(frame.frame_id) == (frame, data)
    assert await frames.load_image(frame.frame_id) == ImageInput(
        frame.frame_id, mime, data, "2023-11-14T22:13:20.123Z", "doorbell"
    )


async def test_defaults_and_data_url_prefix(frames: VisionFrames) -> None:
    frame = await frames.add("s1", None, "IMAGE/PNG", "data:image/png;base64," + b64(PNG), None)

    assert (frame.mime_type, frame.source, frame.device_id) == ("image/png", "camera", None)
    assert (await frames.load(frame.frame_id))[1] == PNG


async def test_size_limit_is_on_the_decoded_bytes(frames: VisionFrames) -> None:
    at_limit = PNG + bytes(1024 - len(PNG))
    frame = await frames.add("s1", None, "image/png", b64(at_limit), None)
    assert frame.size == 1024

    with pytest.raises(FrameError) as caught:
        await frames.add("s1", None, "image/png", b64(at_limit + b"\x00"), None)
    assert (caught.value.code, caught.value.field) == ("frame_too_large", "imageBase64")
    assert "1025 bytes" in caught.value.message and "1024" in caught.value.message


async def test_oversized_upload_is_refused_before_decoding(frames: VisionFrames, directory: Path) -> None:
    # Not even valid base64: the length alone decides, so nothing big is ever decoded.
    with pytest.raises(FrameError) as caught:
        await frames.add("s1", None, "image/png", "@" * 4000 + "AAAA", None)
    assert caught.value.code == "frame_too_large"
    assert files(directory) == []


BAD_UPLOADS = [
    ("not base64 alphabet", "image/png", "iVBO@@@@" + b64(PNG)[8:], "invalid_base64", "imageBase64"),
    ("url-safe alphabet", "image/jpeg", b64(JPEG + b"\xfb\xff").replace("+", "-").replace("/", "_"),
     "invalid_base64", "imageBase64"),
    ("padding missing", "image/png", b64(PNG).rstrip("="), "invalid_base64", "imageBase64"),
    ("too much padding", "image/png", b64(PNG) + "=", "invalid_base64", "imageBase64"),
    ("padding made longer", "image/png", b64(PNG)[:-1] + "A===", "invalid_base64", "imageBase64"),
    ("padding in the middle", "image/png", b64(PNG[:31]) + b64(PNG), "invalid_base64", "imageBase64"),
    ("line breaks", "image/png", b64(PNG)[:20] + "\n" + b64(PNG)[20:-3], "invalid_base64", "imageBase64"),
    ("non-ASCII", "image/png", b64(PNG)[:-4] + "ÄÄÄÄ", "invalid_base64", "imageBase64"),
    ("gif", "image/gif", b64(b"GIF89a" + bytes(20)), "unsupported_mime_type", "mimeType"),
    ("jpg is not a MIME type", "image/jpg", b64(JPEG), "unsupported_mime_type", "mimeType"),
    ("text", "text/plain", b64(PNG), "unsupported_mime_type", "mimeType"),
    ("JPEG data labelled PNG", "image/png", b64(JPEG), "mime_mismatch", "mimeType"),
    ("PNG data labelled WEBP", "image/webp", b64(PNG), "mime_mismatch", "mimeType"),
    ("RIFF but not WEBP", "image/webp", b64(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(8)), "mime_mismatch", "mimeType"),
    ("not an image", "image/jpeg", b64(b"hello world, no image here"), "mime_mismatch", "mimeType"),
    ("data URL of another type", "image/png", "data:image/jpeg;base64," + b64(PNG), "mime_mismatch", "imageBase64"),
    ("empty", "image/png", "", "empty_frame", "imageBase64"),
    ("empty data URL", "image/png", "data:image/png;base64,", "empty_frame", "imageBase64"),
]


@pytest.mark.parametrize(
    ("mime", "text", "code", "field"), [case[1:] for case in BAD_UPLOADS], ids=[case[0] for case in BAD_UPLOADS]
)
async def test_bad_upload_is_refused_and_nothing_is_kept(
    frames: VisionFrames, directory: Path, mime: str, text: str, code: str, field: str
) -> None:
    kept = await frames.add("s1", None, "image/png", b64(PNG), None)

    with pytest.raises(FrameError) as caught:
        await frames.add("s1", None, mime, text, None)

    error = caught.value
    assert (error.code, error.field) == (code, field)
    assert isinstance(error, InvalidInput)  # adapters answer it as a 400 naming the field
    assert error.details == [{"field": field, "reason": error.message}]
    assert files(directory) == sorted([f"{kept.frame_id}.png", f"{kept.frame_id}.json"])
    assert (await frames.load(kept.frame_id))[1] == PNG


async def test_frames_survive_a_restart(directory: Path, clock: FakeClock) -> None:
    first = VisionFrames(directory, clock=clock)
    frame = await first.add("s1", "cam-1", "image/webp", b64(WEBP), "camera")

    second = VisionFrames(directory, clock=clock)
    assert await second.load(frame.frame_id) == (frame, WEBP)


async def test_expired_frame_is_not_found_and_purged(frames: VisionFrames, directory: Path, clock: FakeClock) -> None:
    old = await frames.add("s1", None, "image/png", b64(PNG), None)
    clock.now_ms += 600_000
    young = await frames.add("s1", None, "image/jpeg", b64(JPEG), None)

    clock.now_ms += 299_999
    assert (await frames.load(old.frame_id))[1] == PNG  # 1 ms short of 15 minutes
    clock.now_ms += 1
    with pytest.raises(FrameNotFound) as caught:
        await frames.load(old.frame_id)
    assert isinstance(caught.value, NotFound)
    assert old.frame_id in caught.value.message
    assert caught.value.details == {"frameId": old.frame_id}

    assert await frames.purge_expired() == 1
    assert files(directory) == [f"{young.frame_id}.jpg", f"{young.frame_id}.json"]
    assert await frames.purge_expired() == 0
    assert (await frames.load(young.frame_id))[1] == JPEG


@pytest.mark.parametrize(
    "frame_id",
    [
        "../etc/passwd",
        "/etc/passwd",
        "frame-../../secret",
        "frame-" + "0" * 32 + "/../../secret",
        "../secret",
        "frame-" + "A" * 32,
        "frame-" + "0" * 31,
        "frame-" + "0" * 32 + "\n",
        "",
        "frame-" + "0" * 32,  # well formed, never issued
    ],
)
async def test_crafted_or_unknown_ids_are_not_found(
    frames: VisionFrames, directory: Path, tmp_path: Path, frame_id: str
) -> None:
    await frames.add("s1", None, "image/png", b64(PNG), None)
    # A complete "frame" outside the directory, for ids that try to climb out to it.
    sidecar = {"frameId": frame_id, "sessionId": "x", "deviceId": None, "mimeType": "image/png", "source": "x",
               "capturedAtMs": START_MS, "expiresAtMs": START_MS + 10**9, "size": len(PNG)}
    (tmp_path / "state" / "secret.json").write_text(json.dumps(sidecar))
    (tmp_path / "state" / "secret.png").write_bytes(PNG)

    with pytest.raises(FrameNotFound) as caught:
        await frames.load(frame_id)
    assert caught.value.details == {"frameId": frame_id}
    with pytest.raises(NotFound):
        await frames.load_image(frame_id)


async def test_damaged_frame_files_are_not_found(frames: VisionFrames, directory: Path) -> None:
    cut = await frames.add("s1", None, "image/png", b64(PNG), None)
    (directory / f"{cut.frame_id}.png").write_bytes(PNG[:20])  # power cut before the data landed
    bad_sidecar = await frames.add("s1", None, "image/png", b64(PNG), None)
    (directory / f"{bad_sidecar.frame_id}.json").write_text("{not json")
    no_image = await frames.add("s1", None, "image/png", b64(PNG), None)
    (directory / f"{no_image.frame_id}.png").unlink()

    for frame in (cut, bad_sidecar, no_image):
        with pytest.raises(FrameNotFound):
            await frames.load(frame.frame_id)
    assert await frames.purge_expired() == 1  # the unreadable sidecar; the others expire normally


async def test_too_many_frames_drop_the_oldest(directory: Path, clock: FakeClock) -> None:
    frames = VisionFrames(directory, clock=clock, max_files=3)
    added = []
    for _ in range(5):
        added.append(await frames.add("s1", None, "image/png", b64(PNG), None))
        clock.now_ms += 1000

    # Enforced as frames arrive, not only by the periodic purge.
    assert len(files(directory)) == 6
    for frame in added[:2]:
        with pytest.raises(FrameNotFound):
            await frames.load(frame.frame_id)
    for frame in added[2:]:
        assert (await frames.load(frame.frame_id))[1] == PNG


async def test_purge_keeps_the_total_size_under_its_limit(directory: Path, clock: FakeClock) -> None:
    big = PNG + bytes(1000 - len(PNG))
    writer = VisionFrames(directory, max_bytes=1000, clock=clock)
    added = []
    for _ in range(4):
        added.append(await writer.add("s1", None, "image/png", b64(big), None))
        clock.now_ms += 1000

    purger = VisionFrames(directory, max_bytes=1000, clock=clock, max_total_bytes=2500)
    assert await purger.purge_expired() == 2
    assert sorted(files(directory)) == sorted(f"{f.frame_id}.{ext}" for f in added[2:] for ext in ("png", "json"))


async def test_purge_removes_stale_leftovers_but_not_fresh_ones_or_foreign_files(
    frames: VisionFrames, directory: Path
) -> None:
    kept = await frames.add("s1", None, "image/png", b64(PNG), None)
    stale_tmp = directory / f"frame-{'a' * 32}.png.1234abcd.tmp"
    stale_orphan = directory / f"frame-{'b' * 32}.jpg"
    fresh_tmp = directory / f"frame-{'c' * 32}.json.5678abcd.tmp"
    foreign = directory / "README.txt"
    for path in (stale_tmp, stale_orphan, fresh_tmp, foreign):
        path.write_bytes(b"x")
    an_hour_ago = time.time() - 3600
    for path in (stale_tmp, stale_orphan, foreign):
        os.utime(path, (an_hour_ago, an_hour_ago))

    assert await frames.purge_expired() == 0  # leftovers are not frames

    assert files(directory) == sorted(
        [f"{kept.frame_id}.png", f"{kept.frame_id}.json", fresh_tmp.name, foreign.name]
    )


async def test_purge_of_a_missing_directory(frames: VisionFrames, directory: Path) -> None:
    assert await frames.purge_expired() == 0
    assert not directory.exists()
