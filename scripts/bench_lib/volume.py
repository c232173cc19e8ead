"""A private ext4 file system on a loop device, so the writes of one daemon can be counted
where an SD card would see them: at the block device, after the page cache, the file
system's journal and metadata, and writeback merging.

Needs root (losetup, mkfs.ext4, mount). `Volume.create` returns None with the reason when
that is not possible; callers then fall back to a plain directory and per-process counters.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512  # /sys/block/*/stat counts 512-byte sectors whatever the device's block size
# Raspberry Pi OS mounts its root file system `defaults,noatime`; ext4's default journal
# commit interval (5 s) and data=ordered stay as they are.
MOUNT_OPTIONS = "noatime"
# No lazy initialisation: ext4lazyinit would otherwise zero inode tables in the background
# after mounting, and those writes would be counted as the daemon's.
MKFS_OPTIONS = ("-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0")


@dataclass(frozen=True)
class BlockStat:
    """Cumulative write counters of a block device (Documentation/block/stat.rst)."""

    write_ios: int  # write requests completed (after merging)
    write_sectors: int
    flush_ios: int  # cache flushes (fsync, journal commits); 0 on kernels before 5.5

    @property
    def write_bytes(self) -> int:
        return self.write_sectors * SECTOR

    def minus(self, before: BlockStat) -> BlockStat:
        return BlockStat(self.write_ios - before.write_ios, self.write_sectors - before.write_sectors,
                         self.flush_ios - before.flush_ios)


def read_block_stat(device: str) -> BlockStat:
    """Counters of /dev/<device> (e.g. "loop3")."""
    fields = [int(x) for x in Path(f"/sys/block/{device}/stat").read_text().split()]
    flush_ios = fields[15] if len(fields) > 15 else 0
    return BlockStat(write_ios=fields[4], write_sectors=fields[6], flush_ios=flush_ios)


@dataclass
class Volume:
    image: Path
    mount_point: Path
    device: str  # "loopN"

    @classmethod
    def create(cls, image: Path, mount_point: Path, size_bytes: int) -> tuple[Volume | None, str]:
        """Make, attach and mount a fresh sparse ext4 image; (None, why) when it cannot."""
        if os.geteuid() != 0:
            return None, "not root (loop devices and mount need it)"
        missing = [tool for tool in ("losetup", "mkfs.ext4", "mount", "umount") if shutil.which(tool) is None]
        if missing:
            return None, f"missing {', '.join(missing)}"
        image.parent.mkdir(parents=True, exist_ok=True)
        mount_point.mkdir(parents=True, exist_ok=True)
        with image.open("wb") as f:
            f.truncate(size_bytes)
        device = ""
        try:
            _run("mkfs.ext4", *MKFS_OPTIONS, str(image))
            device = _run("losetup", "--find", "--show", str(image)).strip()
            _run("mount", "-o", MOUNT_OPTIONS, device, str(mount_point))
        except (OSError, subprocess.CalledProcessError) as exc:
            if device:
                with contextlib.suppress(OSError, subprocess.CalledProcessError):
                    _run("losetup", "--detach", device)
            image.unlink(missing_ok=True)
            detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) and exc.stderr else exc
            return None, f"could not set up a loop-mounted ext4 volume: {detail}"
        return cls(image, mount_point, Path(device).name), ""

    def stat(self) -> BlockStat:
        return read_block_stat(self.device)

    def close(self, keep_image: bool = False) -> None:
        """Unmount (flushing what is dirty) and detach; the image is deleted unless kept."""
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            _run("umount", str(self.mount_point))
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            _run("losetup", "--detach", f"/dev/{self.device}")
        if not keep_image:
            self.image.unlink(missing_ok=True)


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout
