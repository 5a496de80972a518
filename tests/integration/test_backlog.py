"""The backlog gauges read JetStream as it is: async tasks not yet taken, review cases not yet
answered (chorus/router/backlog.py), on a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from chorus.cli import review as review_cli
from chorus.core.context import Priority
from chorus.fuser import records
from chorus.launch.natsserver import NatsServer
from chorus.router import backlog, durable
from chorus.router.metrics import RouterMetrics


def test_the_names_are_the_fusers_and_the_reviewers() -> None:
    assert backlog.REVIEW_STREAM == records.REVIEW_STREAM == review_cli.STREAM
    assert backlog.REVIEW_CONSUMER == review_cli.CONSUMER


async def _reads(read: Callable[[], Awaitable[int]], want: int, within_s: float = 3.0) -> int:
    """What `read` gives once it reads `want`, or its last reading after `within_s`: a
    consumer's pending count follows the stream a moment after a publish is acknowledged
    (a busy machine saw 4 of 5 once), and the gauges are read every few seconds anyway."""
    deadline = time.monotonic() + within_s
    got = await read()
    while got != want and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        got = await read()
    return got


async def test_backlogs_follow_the_streams(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "js") as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        try:
            # No review stream yet: nothing waits.
            assert await backlog.review_backlog(js) == 0
            await js.add_stream(
                StreamConfig(name=records.REVIEW_STREAM, subjects=[records.REVIEW_SUBJECTS])
            )
            for i in range(3):
                await js.publish(f"chorus.review.c{i % 2}", b"case")
            # No reviewer has connected: every case in the stream waits.
            assert await _reads(lambda: backlog.review_backlog(js), 3) == 3
            sub = await js.pull_subscribe(
                "chorus.review.>", durable=backlog.REVIEW_CONSUMER, stream=records.REVIEW_STREAM,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
            )  # fmt: skip
            (msg,) = await sub.fetch(1, timeout=2)
            taken_not_answered = await _reads(lambda: backlog.review_backlog(js), 3)
            assert taken_not_answered == 3, "a case taken and not answered still waits"
            await msg.ack_sync()
            assert await _reads(lambda: backlog.review_backlog(js), 2) == 2

            stream = durable.stream_name(Priority.BATCH)
            await js.add_stream(
                StreamConfig(name=stream, subjects=["chorus.tasks.batch"], retention="workqueue")
            )
            tasks = await js.pull_subscribe(
                "chorus.tasks.batch", durable=durable.CONSUMER, stream=stream
            )
            for _ in range(5):
                await js.publish("chorus.tasks.batch", b"task")

            async def pending() -> int:
                return await backlog.task_backlog(js, stream, durable.CONSUMER)

            assert await _reads(pending, 5) == 5
            taken = await tasks.fetch(2, timeout=2)
            assert len(taken) == 2
            assert await _reads(pending, 3) == 3

            # The loop sets the router's gauges, and stops when told.
            metrics = RouterMetrics()
            stopping = asyncio.Event()
            loop = asyncio.create_task(
                backlog.read_backlogs(
                    js, metrics, {Priority.BATCH: stream}, durable.CONSUMER, stopping, every_s=0.05
                )
            )
            await asyncio.sleep(0.3)
            stopping.set()
            await asyncio.wait_for(loop, 2)
            read = metrics.registry.get_sample_value
            assert read("chorus_router_async_backlog", {"priority": "batch"}) == 3
            assert read("chorus_router_async_backlog", {"priority": "normal"}) == 0
            assert read("chorus_router_review_backlog") == 2
        finally:
            await nc.close()
