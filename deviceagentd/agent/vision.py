"""Vision frames: images uploaded with `POST /api/vision/frames`, referenced later by id.

Each frame is two files in `directory`: `<frameId>.<ext>` (the image) and `<frameId>.json`
(who sent it, when, when it expires). Both are written off the event loop, each to a
temporary name first and renamed into place, the sidecar last: a frame with a sidecar is
complete, and a restart keeps frames until they expire.

Input rules, checked in this order:
* mimeType is image/jpeg, image/png or image/webp (case-insensitive) → `unsupported_mime_type`.
* imageBase64 is standard base64 (RFC 4648 alphabet `A-Z a-z 0-9 + /`) with its `=` padding,
  no whitespace or line breaks (`base64 -w0`) → `invalid_base64`. One `data:<mime>;base64,`
  prefix (what a browser's FileReader.readAsDataURL gives) is accepted and removed; its
  mime type must be mimeType's → `mime_mismatch`.
* Nothing after the prefix → `empty_frame`; more than `max_bytes` once decoded →
  `frame_too_large`, judged from the text's length before decoding anything.
* The decoded bytes start like the declared format (JPEG `FF D8 FF`, PNG's 8-byte
  signature, WEBP `RIFF....WEBP`) → `mime_mismatch` otherwise.

Frame ids are ours (`frame-` and 32 hex digits); any other id is unknown, so a crafted id
never becomes a path outside `directory`.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deviceagentd.agent.types import ImageInput
from deviceagentd.core.clock import Clock, iso_ms
from deviceagentd.core.errors import InvalidInput, NotFound

log = logging.getLogger("deviceagentd.agent")

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_TTL_S = 900.0
DEFAULT_MAX_FILES = 200
DEFAULT_MAX_TOTAL_BYTES = 256 * 1024 * 1024
# As in the seed document's example upload.
DEFAULT_SOURCE = "camera"
# Leftovers of a write that never finished (crash between the two renames) are only
# removed once this old, so a purge never deletes a frame that is being written.
ORPHAN_GRACE_S = 60.0

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
_FRAME_ID = re.compile(r"frame-[0-9a-f]{32}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_DATA_URL = re.compile(r"data:([^;,]{0,100});base64,", re.IGNORECASE)
_SIDECAR = ".json"
_TMP = ".tmp"
FRAME_FIELD = "imageBase64"
MIME_FIELD = "mimeType"


class FrameError(InvalidInput):
    """An upload that cannot become a frame. `code` is one of invalid_base64,
    unsupported_mime_type, mime_mismatch, frame_too_large, empty_frame; `field` is the
    request field at fault. A core InvalidInput, so adapters answer it as a bad request."""

    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(message, [{"field": field, "reason": message}])
        self.code = code
        self.field = field


class FrameNotFound(NotFound):
    """No usable frame by that id: never issued, expired, purged, or not a frame id at all."""

    code = "frame_not_found"

    def __init__(self, frame_id: str) -> None:
        shown = frame_id if len(frame_id) <= 80 else frame_id[:80] + "…"
        super().__init__(f"vision frame {shown!r} is unknown or has expired", {"frameId": frame_id})
        self.frame_id = frame_id


@dataclass(frozen=True)
class Frame:
    frame_id: str
    session_id: str
    device_id: str | None
    mime_type: str
    source: str
    captured_at_ms: int
    expires_at_ms: int
    size: int

    @property
    def captured_at(self) -> str:
        """ISO 8601 UTC with milliseconds and Z."""
        text = iso_ms(self.captured_at_ms)
        assert text is not None
        return text

    def to_json(self) -> dict[str, Any]:
        """The upload route's answer: {frameId, capturedAt, source, mimeType}."""
        return {
            "frameId": self.frame_id,
            "capturedAt": self.captured_at,
            "source": self.source,
            "mimeType": self.mime_type,
        }


class VisionFrames:
    def __init__(
        self,
        directory: Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Clock | None = None,
        *,
        max_files: int = DEFAULT_MAX_FILES,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    ) -> None:
        if max_bytes < 1 or ttl_s <= 0 or max_files < 1 or max_total_bytes < max_bytes:
            raise ValueError("vision frame limits must be positive, and the total at least one frame")
        self._directory = directory
        self._max_bytes = max_bytes
        self._ttl_ms = int(ttl_s * 1000)
        self._clock = clock if clock is not None else Clock()
        self._max_files = max_files
        self._max_total_bytes = max_total_bytes

    async def add(
        self,
        session_id: str,
        device_id: str | None,
        mime_type: str,
        image_base64: str,
        source: str | None,
    ) -> Frame:
        """Check and keep one uploaded image; raises FrameError naming the field at fault."""
        mime = _checked_mime(mime_type)
        text = _strip_data_url(image_base64, mime)
        size = _decoded_size(text)  # before decoding: an oversized upload costs no memory
        if size > self._max_bytes:
            raise FrameError(
                "frame_too_large",
                f"the image is {size} bytes once decoded, more than the limit of {self._max_bytes}",
                FRAME_FIELD,
            )
        now_ms = self._clock.wall_ms()
        frame = Frame(
            frame_id=f"frame-{uuid.uuid4().hex}",
            session_id=session_id,
            device_id=device_id,
            mime_type=mime,
            source=source or DEFAULT_SOURCE,
            captured_at_ms=now_ms,
            expires_at_ms=now_ms + self._ttl_ms,
            size=size,
        )
        # Decoding a few MiB and writing them are both kept off the loop.
        await asyncio.to_thread(self._decode_and_write, frame, text)
        return frame

    async def load(self, frame_id: str) -> tuple[Frame, bytes]:
        """The frame and its image bytes; FrameNotFound if unknown, expired or unreadable."""
        if not isinstance(frame_id, str) or _FRAME_ID.fullmatch(frame_id) is None:
            raise FrameNotFound(str(frame_id))
        found = await asyncio.to_thread(self._read, frame_id)
        if found is None or self._clock.wall_ms() >= found[0].expires_at_ms:
            raise FrameNotFound(frame_id)
        return found

    async def load_image(self, frame_id: str) -> ImageInput:
        """The frame as a provider input (the agent's FrameLoader)."""
        frame, data = await self.load(frame_id)
        return ImageInput(frame.frame_id, frame.mime_type, data, frame.captured_at, frame.source)

    async def purge_expired(self) -> int:
        """Delete expired frames, then the oldest while more than `max_files` frames or
        `max_total_bytes` are kept; returns how many frames went. For a periodic task."""
        return await asyncio.to_thread(self._purge)

    # --- worker threads ---

    def _decode_and_write(self, frame: Frame, text: str) -> None:
        try:
            data = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise FrameError("invalid_base64", f"imageBase64 is not valid base64 ({exc})", FRAME_FIELD) from exc
        # Strict decoding makes the size from the length exact; the sidecar and load rely on it.
        assert len(data) == frame.size, (len(data), frame.size)
        _check_magic(data, frame.mime_type)
        self._directory.mkdir(parents=True, exist_ok=True)
        image = self._image_path(frame.frame_id, frame.mime_type)
        _write_atomically(image, data)
        _write_atomically(self._sidecar_path(frame.frame_id), json.dumps(_frame_json(frame)).encode())
        if self._over_limits():
            self._purge()

    def _read(self, frame_id: str) -> tuple[Frame, bytes] | None:
        frame = self._read_sidecar(self._sidecar_path(frame_id))
        if frame is None or frame.frame_id != frame_id:
            return None
        try:
            data = self._image_path(frame_id, frame.mime_type).read_bytes()
        except OSError:
            return None
        # A frame whose image was cut short (power cut before the data reached the card)
        # is as good as gone.
        if len(data) != frame.size or _format_of(data) != frame.mime_type:
            return None
        return frame, data

    def _read_sidecar(self, path: Path) -> Frame | None:
        try:
            return _frame_from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _purge(self) -> int:
        now_ms = self._clock.wall_ms()
        frames: list[tuple[Frame, int]] = []
        deleted = 0
        try:
            entries = list(os.scandir(self._directory))
        except FileNotFoundError:
            return 0
        names = {entry.name for entry in entries}
        for entry in entries:
            frame_id, suffix = _split(entry.name)
            if frame_id is None or suffix != _SIDECAR:
                continue
            frame = self._read_sidecar(Path(entry.path))
            if frame is None or frame.frame_id != frame_id or now_ms >= frame.expires_at_ms:
                deleted += self._delete(frame_id)
                continue
            frames.append((frame, frame.size))
        # Oldest first; over either limit, the oldest go.
        frames.sort(key=lambda item: (item[0].captured_at_ms, item[0].frame_id))
        count, total = len(frames), sum(size for _, size in frames)
        for frame, size in frames:
            if count <= self._max_files and total <= self._max_total_bytes:
                break
            deleted += self._delete(frame.frame_id)
            count, total = count - 1, total - size
        self._remove_orphans(entries, names)
        if deleted:
            log.info("vision frames: deleted %d expired or over the limits", deleted)
        return deleted

    def _delete(self, frame_id: str) -> int:
        # Sidecar first: without it the frame is unknown at once, even if the image stays.
        with contextlib.suppress(FileNotFoundError):
            self._sidecar_path(frame_id).unlink()
        for mime in _EXTENSIONS:
            self._image_path(frame_id, mime).unlink(missing_ok=True)
        return 1

    def _remove_orphans(self, entries: list[os.DirEntry[str]], names: set[str]) -> None:
        """Images without a sidecar and temporary files, once older than the grace period.
        Files that are not ours are left alone."""
        # Compared with file times, so the real clock, not the injected one.
        horizon = time.time() - ORPHAN_GRACE_S
        for entry in entries:
            frame_id, suffix = _split(entry.name)
            if frame_id is None or suffix == _SIDECAR:
                continue
            if suffix != _TMP and f"{frame_id}{_SIDECAR}" in names:
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < horizon:
                    Path(entry.path).unlink(missing_ok=True)

    def _over_limits(self) -> bool:
        count = total = 0
        for entry in os.scandir(self._directory):
            frame_id, suffix = _split(entry.name)
            if frame_id is None or suffix in (_SIDECAR, _TMP):
                continue
            count += 1
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
        return count > self._max_files or total > self._max_total_bytes

    def _image_path(self, frame_id: str, mime_type: str) -> Path:
        return self._directory / f"{frame_id}.{_EXTENSIONS[mime_type]}"

    def _sidecar_path(self, frame_id: str) -> Path:
        return self._directory / f"{frame_id}{_SIDECAR}"


# --- input checks ---


def _checked_mime(mime_type: str) -> str:
    mime = mime_type.strip().lower() if isinstance(mime_type, str) else ""
    if mime not in _EXTENSIONS:
        allowed = ", ".join(_EXTENSIONS)
        raise FrameError(
            "unsupported_mime_type", f"mimeType must be one of {allowed} (got {str(mime_type)[:80]!r})", MIME_FIELD
        )
    return mime


def _strip_data_url(image_base64: str, mime: str) -> str:
    if not isinstance(image_base64, str):
        raise FrameError("invalid_base64", "imageBase64 must be a base64 string", FRAME_FIELD)
    prefix = _DATA_URL.match(image_base64)
    if prefix is None:
        return image_base64
    declared = prefix.group(1).strip().lower()
    if declared != mime:
        raise FrameError(
            "mime_mismatch",
            f"imageBase64 is a data URL of {declared or 'no type'!r} but mimeType is {mime}",
            FRAME_FIELD,
        )
    return image_base64[prefix.end() :]


def _decoded_size(text: str) -> int:
    """Bytes the base64 text decodes to, from its length and padding alone.

    The full check of the alphabet happens while decoding (off the loop); this one is cheap
    enough to reject a wrong length or a stray character in the padding first.
    """
    if not text:
        raise FrameError("empty_frame", "imageBase64 is empty; send the image", FRAME_FIELD)
    if len(text) % 4:
        raise FrameError(
            "invalid_base64",
            f"imageBase64 is not valid base64: its length {len(text)} is not a multiple of 4 "
            "(padding missing, or whitespace or line breaks inside)",
            FRAME_FIELD,
        )
    tail = text[-4:]
    if _BASE64.fullmatch(tail) is None:
        raise FrameError("invalid_base64", "imageBase64 is not valid base64 (bad characters or padding)", FRAME_FIELD)
    return len(text) // 4 * 3 - tail.count("=")


def _format_of(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _check_magic(data: bytes, mime: str) -> None:
    found = _format_of(data)
    if found == mime:
        return
    what = "not a JPEG, PNG or WEBP image" if found is None else f"a {found} image"
    raise FrameError("mime_mismatch", f"the image data is {what}, but mimeType is {mime}", MIME_FIELD)


# --- files ---


def _split(name: str) -> tuple[str | None, str]:
    """(frame id, the rest of the name) for our files, (None, "") for anything else."""
    frame_id, dot, rest = name.partition(".")
    if _FRAME_ID.fullmatch(frame_id) is None or not dot:
        return None, ""
    suffix = "." + rest
    if suffix.endswith(_TMP):
        return frame_id, _TMP
    if suffix == _SIDECAR or rest in _EXTENSIONS.values():
        return frame_id, suffix
    return None, ""


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{_TMP}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _frame_json(frame: Frame) -> dict[str, Any]:
    return {
        "frameId": frame.frame_id,
        "sessionId": frame.session_id,
        "deviceId": frame.device_id,
        "mimeType": frame.mime_type,
        "source": frame.source,
        "capturedAtMs": frame.captured_at_ms,
        "expiresAtMs": frame.expires_at_ms,
        "size": frame.size,
    }


def _frame_from_json(value: dict[str, Any]) -> Frame | None:
    mime = value["mimeType"]
    if mime not in _EXTENSIONS:
        return None
    device_id = value["deviceId"]
    return Frame(
        frame_id=str(value["frameId"]),
        session_id=str(value["sessionId"]),
        device_id=None if device_id is None else str(device_id),
        mime_type=mime,
        source=str(value["source"]),
        captured_at_ms=int(value["capturedAtMs"]),
        expires_at_ms=int(value["expiresAtMs"]),
        size=int(value["size"]),
    )
