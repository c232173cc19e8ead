"""Stopping a stream's background work: cancel its tasks and wake whoever waits on its output."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout_s: float | None = None) -> None:
    """Cancel and wait for them to finish (at most `timeout_s`: a task that ignores cancellation
    is left behind rather than hanging its owner). Their own errors are not raised here (each task
    hands its failure to the stream's queue); cancellation of the caller still propagates."""
    tasks = list(tasks)
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)
    for task in tasks:
        # Retrieve outcomes so asyncio does not log "exception was never retrieved".
        if task.done() and not task.cancelled():
            task.exception()


def end_queue(queue: asyncio.Queue[Any]) -> None:
    """Drop what is queued and put the end marker (None), so a consumer blocked in get() wakes up
    and finishes instead of waiting for a producer that was cancelled."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(None)
