"""The parts every service shares: the heartbeat loop, the answer to a failed request and
stopping a task."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chorus.core.errors import InvalidArgument, respond_error
from chorus.core.heartbeat import HeartbeatLoop
from chorus.core.spawner import cancel


class _Request:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    async def respond_error(self, code: str, description: str) -> None:
        self.errors.append((code, description))


async def test_a_chorus_error_is_answered_with_its_own_code_and_words() -> None:
    request = _Request()
    label = await respond_error(request, InvalidArgument("x: wrong"), "model mlp")
    assert label == "invalid_argument"
    assert request.errors == [("INVALID_ARGUMENT", "x: wrong")]


async def test_anything_else_is_internal_naming_where_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = _Request()
    try:
        raise KeyError("k")
    except KeyError as exc:
        label = await respond_error(request, exc, "fuser")
    assert label == "internal"
    assert request.errors == [("INTERNAL", "fuser: KeyError('k')")]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


async def test_the_heartbeat_loop_beats_survives_a_failed_beat_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    beats: list[int] = []

    async def announce() -> None:
        beats.append(len(beats))
        if len(beats) == 2:
            raise ConnectionError("nats down")

    loop = HeartbeatLoop(announce, 0.01, "heartbeat-test")
    loop.start()
    loop.start()  # once only
    while len(beats) < 4:
        await asyncio.sleep(0.01)
    await loop.stop()
    stopped_at = len(beats)
    await asyncio.sleep(0.05)
    assert len(beats) == stopped_at
    assert "heartbeat-test failed: nats down" in caplog.text
    await loop.stop()  # again: nothing to do


async def test_cancel_waits_for_the_task_to_stop_and_takes_none() -> None:
    cleaned: list[str] = []

    async def work() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append("done")

    task = asyncio.create_task(work())
    await asyncio.sleep(0)
    await cancel(task)
    assert task.cancelled() and cleaned == ["done"]
    await cancel(None)
