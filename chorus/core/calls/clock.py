"""The clock member calls read, passed in so the unit tests can run on a fake one.

`monotonic()` is in seconds and agrees with the event loop's own clock (asyncio's timeouts
and `call_later`), as `time.monotonic` does for the default loop; deadlines between hops stay
wall-clock (`CallContext`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM = SystemClock()
