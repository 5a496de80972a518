"""Owned background tasks: nothing a service starts outlives its stop.

nats-py runs one subscription's callbacks one after another, so a handler that awaits I/O
would serialise every request; handlers hand their work to a Spawner instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


async def cancel(task: asyncio.Future[Any] | None) -> None:
    """Cancel `task` and wait until it has stopped (its `finally` blocks have run); None is
    nothing to do. A stopped task's CancelledError is swallowed here."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Spawner:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed: %r", task.get_name(), task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Let running work finish (it answers callers), then return."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
