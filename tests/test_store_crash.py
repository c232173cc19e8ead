"""kill -9 in the middle of writing: nothing flushed is lost and the file is never corrupt."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from deviceagentd.store import NewEvent, Store, StoreSettings, wall_clock_ms

REPO = Path(__file__).resolve().parent.parent

# Adds events without pause; after every flush it prints the newest id known committed.
# Between flushes more events are already waiting, so the kill lands mid-batch or
# mid-commit as often as between them.
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from deviceagentd.store import NewEvent, Store, StoreSettings, wall_clock_ms

    async def main() -> None:
        store = Store(Path(sys.argv[1]), StoreSettings(batch_interval_s=0.01))
        store.open()
        while True:
            for _ in range(300):
                last = store.add_event(
                    NewEvent("dev-1", "p", "tick", "info", True, {"pad": "x" * 200}, 1, wall_clock_ms())
                )
            flushing = asyncio.ensure_future(store.flush())
            for _ in range(300):
                store.add_event(
                    NewEvent("dev-1", "p", "tick", "info", True, {"pad": "y" * 200}, 1, wall_clock_ms())
                )
            await flushing
            print(last.id, flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("kill_after_lines", [3, 25])
async def test_kill_9_keeps_every_flushed_event(tmp_path: Path, kill_after_lines: int) -> None:
    path = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    flushed: list[int] = []
    try:
        while len(flushed) < kill_after_lines:
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            assert line, "child exited early"
            flushed.append(int(line))
    finally:
        child.send_signal(signal.SIGKILL)
        rest = await asyncio.wait_for(child.stdout.read(), 60)
        await child.wait()
    flushed += [int(line) for line in rest.split()]
    assert child.returncode == -signal.SIGKILL
    last_flushed = max(flushed)

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        ids = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id")]
        [(reserved,)] = conn.execute("SELECT value FROM store_meta WHERE key = 'event_ids_reserved'")
    assert len(ids) >= last_flushed
    # Batches commit whole and in order: what survives is an unbroken run from id 1.
    assert ids == list(range(1, len(ids) + 1))
    # Every id the child handed out (committed or not) was reserved on disk first.
    assert reserved >= len(ids)

    store = Store(path, StoreSettings(batch_interval_s=0.01))
    store.open()
    try:
        after = store.add_event(
            NewEvent("dev-1", "p", "after", "info", True, {}, 1, wall_clock_ms())
        )
        await store.flush()
        # Above every id handed out before the crash, so none of them ever names another event.
        assert after.id == reserved + 1
        assert store.stats().commits == 1
    finally:
        store.close()
    assert list(tmp_path.glob("*.corrupt-*")) == []
