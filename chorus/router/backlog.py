"""How much work waits in JetStream: async tasks no router has taken, review cases no reviewer
has answered. Read every few seconds into the router's gauges, for the dashboard and for the
alerts that page when either keeps growing.

The router reads both because it owns the async task streams and takes the reviewers'
answers (the Review call); every router reports the same numbers, so queries take their max.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from chorus.core.context import Priority
from chorus.router.metrics import RouterMetrics

log = logging.getLogger(__name__)

READ_EVERY_S = 5.0
"""A backlog that matters grows for minutes; a read costs one JetStream API call a stream."""
REVIEW_STREAM = "CHORUS_REVIEW"
REVIEW_CONSUMER = "chorus-reviewers"
"""The review stream and the reviewers' shared durable consumer (chorus.fuser.records and
chorus.cli.review name them too; tests/integration/test_backlog.py holds the three equal)."""


async def review_backlog(js: JetStreamContext) -> int:
    """Review cases not yet answered: those the reviewers' shared consumer has not had
    acknowledged (waiting, or taken and not answered), or every case in the stream while no
    reviewer has ever connected (the stream keeps answered cases, so its size alone would
    only grow). Per-capability reviewer consumers (`chorus review --capability`) are summed
    when there is no shared one."""
    try:
        stream = await js.stream_info(REVIEW_STREAM)
    except NotFoundError:
        return 0
    shared: list[int] = []
    per_capability: list[int] = []
    for consumer in await js.consumers_info(REVIEW_STREAM):
        waiting = int(consumer.num_pending or 0) + int(consumer.num_ack_pending or 0)
        if consumer.name == REVIEW_CONSUMER:
            shared.append(waiting)
        elif consumer.name.startswith(REVIEW_CONSUMER + "-"):
            per_capability.append(waiting)
    if shared:
        return shared[0]
    if per_capability:
        return sum(per_capability)
    return int(stream.state.messages)


async def task_backlog(js: JetStreamContext, stream: str, consumer: str) -> int:
    """Async tasks of one priority published and not yet delivered to any router."""
    try:
        info = await js.consumer_info(stream, consumer)
    except NotFoundError:
        return 0
    return int(info.num_pending or 0)


async def read_backlogs(
    js: JetStreamContext,
    metrics: RouterMetrics,
    streams: dict[Priority, str],
    consumer: str,
    stopping: asyncio.Event,
    every_s: float = READ_EVERY_S,
) -> None:
    """Set the backlog gauges every `every_s` until `stopping`; a failed read (NATS
    reconnecting, a leader election) leaves the last values and tries again next time."""
    while not stopping.is_set():
        try:
            for p, stream in streams.items():
                metrics.async_backlog.labels(p.label).set(await task_backlog(js, stream, consumer))
            metrics.review_backlog.set(await review_backlog(js))
        except (TimeoutError, NatsError) as exc:
            log.debug("backlog read failed: %s", exc)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), every_s)
