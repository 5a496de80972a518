"""Durable async tasks: accepted into JetStream before their id is returned, run by whichever
router takes them, and never lost.

Each priority class has a work-queue stream (chorus.tasks.<class>); every router pulls from
all three through one shared durable consumer per stream, and its priority scheduler orders
what it took with its synchronous tasks. A task is acknowledged only after its result is
stored, so a router that dies mid-task leaves it to be delivered again after `ack_wait_s`; a
task the mesh cannot run right now (no live model, out of time) is handed back with a growing
delay, up to `max_attempts` runs, before it is marked failed. A result is written by
compare-and-set and never replaces a finished one, so two deliveries of one task running side
by side cannot undo each other.
Results live in the key-value bucket `chorus_results` with a TTL. The idempotency key becomes
the task id, so a retried SubmitAsync finds the first submission's record and JetStream's
de-duplication window drops the repeated message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import numpy as np
from nats.aio.client import Client
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import (
    APIError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
)
from nats.js.kv import KeyValue

from chorus.core import subjects
from chorus.core.context import Priority
from chorus.core.errors import ChorusError, DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from chorus.core.jetstream import ensure_bucket, ensure_stream
from chorus.core.spawner import Spawner, cancel
from chorus.pb import task_pb2
from chorus.router.backlog import read_backlogs
from chorus.router.task import TaskRunner

log = logging.getLogger(__name__)
T = TypeVar("T")
Record = tuple[task_pb2.TaskResult, int]
"""A task's stored result and the revision it was read or written at."""
RESULTS = "chorus_results"
CONSUMER = "chorus-router"
TERMINAL = (task_pb2.TASK_STATUS_DONE, task_pb2.TASK_STATUS_FAILED)
TRANSIENT = (Unavailable, NotFound, DeadlineExceeded)
"""Failures that say "not now" (no live model, no answer in time), retried with backoff;
bad input fails at once."""


STORE_RETRY_S = 15.0
"""How long a durable write keeps trying while JetStream elects new leaders: after a cluster
node's loss that took 4-8 s here (nats-server's Raft election timeout), more on a loaded
machine. A caller's own deadline, when shorter, wins."""
STORE_RETRY_FIRST_S = 0.05
STORE_RETRY_MAX_S = 1.0
"""The pause between two tries of a durable write: doubling from the first to the most."""
FETCH_WAIT_S = 1.0
"""How long a durable worker's fetch waits for a task before asking again (and seeing stop)."""
FETCH_ERROR_PAUSE_S = 0.5
"""The pause after a failed fetch (NATS reconnecting), so a worker does not spin."""
REDELIVER_FIRST_S = 0.5
REDELIVER_MAX_S = 15.0
"""A task the mesh could not run now (no live model, out of time) comes back after
REDELIVER_FIRST_S x 2^attempts, at most REDELIVER_MAX_S."""


async def _retrying(
    write: Callable[[], Awaitable[T]], what: str, within_s: float | None = None
) -> T:
    budget = STORE_RETRY_S if within_s is None else max(0.0, min(STORE_RETRY_S, within_s))
    deadline = time.monotonic() + budget
    delay = STORE_RETRY_FIRST_S
    while True:
        try:
            return await write()
        except (NoStreamResponseError, NatsTimeout, ConnectionClosedError, APIError) as exc:
            if isinstance(exc, KeyWrongLastSequenceError):
                raise
            if isinstance(exc, APIError) and not _transient(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise Unavailable(
                    f"async tasks: JetStream did not take the task's {what} within "
                    f"{budget:.1f} s ({type(exc).__name__}: {exc}); retry with the "
                    "same idempotency_key"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_RETRY_MAX_S)


def _transient(exc: APIError) -> bool:
    """Leader elections answer 503 (no leader, no quorum) or time out; anything else is
    a real refusal."""
    return exc.code in (503, 408) or exc.code is None


def stream_name(p: Priority) -> str:
    return f"CHORUS_TASKS_{p.name}"


class DurableTasks:
    def __init__(
        self,
        nc: Client,
        runner: TaskRunner,
        *,
        workers: int,
        ack_wait_s: float,
        result_ttl_s: float,
        dedupe_window_s: float,
        max_attempts: int = 6,
        replicas: int = 1,
    ) -> None:
        self.js: JetStreamContext = nc.jetstream()
        self.replicas = replicas
        self.runner = runner
        self.workers = workers
        self.ack_wait_s = ack_wait_s
        self.result_ttl_s = result_ttl_s
        self.dedupe_window_s = dedupe_window_s
        self.max_attempts = max_attempts
        self._kv: KeyValue | None = None
        self._loops = Spawner()
        self._stopping = asyncio.Event()
        self._subs: list[JetStreamContext.PullSubscription] = []

    async def start(self) -> None:
        for p in Priority:
            config = StreamConfig(
                name=stream_name(p),
                subjects=[subjects.tasks(p.label)],
                retention=RetentionPolicy.WORK_QUEUE,
                duplicate_window=self.dedupe_window_s,
            )
            await ensure_stream(self.js, config, self.replicas)
        self._kv = await ensure_bucket(self.js, RESULTS, self.replicas, ttl=self.result_ttl_s)
        for p in Priority:
            sub = await self.js.pull_subscribe(
                subjects.tasks(p.label),
                durable=CONSUMER,
                stream=stream_name(p),
                config=ConsumerConfig(ack_wait=self.ack_wait_s, max_deliver=-1),
            )
            self._subs.append(sub)
            for i in range(self.workers):
                self._loops.spawn(self._work(sub), name=f"tasks-{p.label}-{i}")
        streams = {p: stream_name(p) for p in Priority}
        self._loops.spawn(
            read_backlogs(self.js, self.runner.metrics, streams, CONSUMER, self._stopping),
            name="backlogs",
        )

    async def stop(self) -> None:
        self._stopping.set()
        await self._loops.close()
        # A pull subscription's unread buffer would hold up the connection's drain.
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def submit(
        self, req: task_pb2.SubmitAsyncRequest, within_s: float | None = None
    ) -> task_pb2.SubmitAsyncResponse:
        """Record the task as pending, then publish it. Both steps are retried through a
        NATS node's loss (within `within_s`, the caller's time left, at most STORE_RETRY_S)
        and both are idempotent (the result key is created once, the publish is
        de-duplicated by message id), so a retry never runs a task twice and a task
        recorded but not yet published is published by whichever attempt comes next."""
        assert self._kv is not None
        started = time.monotonic()
        task = task_pb2.SubmitRequest()
        task.CopyFrom(req.task)
        self.runner.validate(task)
        if req.idempotency_key:
            task.task_id = "idem-" + hashlib.sha256(req.idempotency_key.encode()).hexdigest()[:32]
        task.task_id = task.task_id or uuid.uuid4().hex
        pending = task_pb2.TaskResult(task_id=task.task_id, status=task_pb2.TASK_STATUS_PENDING)
        key = subjects.kv_key(task.task_id)
        kv = self._kv
        tries = 0

        async def record() -> int:
            nonlocal tries
            tries += 1
            return await kv.create(key, pending.SerializeToString())

        def left() -> float | None:
            return None if within_s is None else within_s - (time.monotonic() - started)

        try:
            await _retrying(record, "record", left())
            duplicate = False
        except KeyWrongLastSequenceError:
            known = await _retrying(lambda: self.get(task.task_id), "lookup", left())
            if known.status != task_pb2.TASK_STATUS_PENDING or known.attempts > 0:
                return task_pb2.SubmitAsyncResponse(task_id=task.task_id, duplicate=True)
            # Recorded, never delivered: perhaps never published. Found by a retry, the record
            # is this call's own first try, whose answer was lost.
            duplicate = tries == 1
        priority = Priority.from_wire(task.priority)
        ack = await _retrying(
            lambda: self.js.publish(
                subjects.tasks(priority.label),
                task.SerializeToString(),
                headers={"Nats-Msg-Id": task.task_id},
            ),
            "publish",
            left(),
        )
        return task_pb2.SubmitAsyncResponse(
            task_id=task.task_id, duplicate=duplicate or bool(ack.duplicate)
        )

    async def get(self, task_id: str) -> task_pb2.TaskResult:
        known = await self._record(subjects.kv_key(task_id))
        if known is None:
            raise NotFound(
                f"task_id: no async task {task_id!r} (unknown, or its result expired after "
                f"{self.result_ttl_s:.0f} s)"
            )
        return known[0]

    async def watch(self, task_id: str) -> AsyncIterator[task_pb2.TaskResult]:
        assert self._kv is not None
        current = await self.get(task_id)
        yield current
        if current.status in TERMINAL:
            return
        watcher = await self._kv.watch(subjects.kv_key(task_id), include_history=False)
        try:
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                result = task_pb2.TaskResult.FromString(entry.value)
                if result.status == current.status and result.status != task_pb2.TASK_STATUS_DONE:
                    continue
                current = result
                yield result
                if result.status in TERMINAL:
                    return
        finally:
            await watcher.stop()

    async def review(self, req: task_pb2.ReviewRequest) -> task_pb2.TaskResult:
        """Write a person's answers into the task's result (creating it for sync tasks)."""
        assert self._kv is not None
        if not req.task_id:
            raise InvalidArgument("task_id: empty; send the task id of the review case")
        if len(req.rows) != len(req.labels) or not req.rows:
            raise InvalidArgument(
                f"rows/labels: expected one label per reviewed row, got {len(req.rows)} rows "
                f"and {len(req.labels)} labels"
            )
        try:
            result = await self.get(req.task_id)
        except NotFound:
            result = task_pb2.TaskResult(task_id=req.task_id, status=task_pb2.TASK_STATUS_DONE)
            result.response.task_id = req.task_id
            result.response.capability = req.capability
            result.response.explanation.rows.extend(req.decisions)
        rows = result.response.explanation.rows
        who = req.reviewer or "a reviewer"
        for r, label in zip(req.rows, req.labels, strict=True):
            if r >= len(rows):
                raise InvalidArgument(f"rows: task {req.task_id} has {len(rows)} rows, got {r}")
            was = rows[r].label
            rows[r].label, rows[r].status = label, "reviewed"
            rows[r].rule = f"decided by a person ({who}); the mesh had said {was}"
        for t in result.response.outputs:
            if t.name == "label":
                labels = np.array([row.label for row in rows], dtype=np.int64)
                t.raw = labels.tobytes()
        await self._kv.put(subjects.kv_key(req.task_id), result.SerializeToString())
        return result

    async def _work(self, sub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(1, timeout=FETCH_WAIT_S)
            except NatsTimeout:
                continue
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("fetching durable tasks failed: %s", exc)
                await asyncio.sleep(FETCH_ERROR_PAUSE_S)
                continue
            for msg in msgs:
                try:
                    await self._run(msg)
                except Exception as exc:  # not acked: delivered again after ack_wait
                    log.warning("durable task not finished, left for redelivery: %s", exc)

    async def _run(self, msg: object) -> None:
        assert self._kv is not None
        task = task_pb2.SubmitRequest.FromString(msg.data)  # type: ignore[attr-defined]
        key = subjects.kv_key(task.task_id)
        # Reads and writes ride out a leader election instead of leaving the task for
        # redelivery after ack_wait.
        known = await _retrying(lambda: self._record(key), "lookup")
        if known is not None and known[0].status in TERMINAL:
            await msg.ack()  # type: ignore[attr-defined]
            return  # published twice, or delivered again while another router ran it
        # Runs started, from the record rather than the delivery count: a message delivered
        # again because its in-progress acks were lost (a NATS node frozen) did not fail.
        attempts = (known[0].attempts if known is not None else 0) + 1
        running = task_pb2.TaskResult(
            task_id=task.task_id, status=task_pb2.TASK_STATUS_RUNNING, attempts=attempts
        )
        started = await _retrying(lambda: self._write(key, running, known), "record")
        if started is None:
            await msg.ack()  # type: ignore[attr-defined]
            return
        # Keeps the message ours while it runs longer than ack_wait.
        keepalive = asyncio.create_task(self._in_progress(msg))
        try:
            response = await self.runner.submit(task, None)
            result = task_pb2.TaskResult(
                task_id=task.task_id, status=task_pb2.TASK_STATUS_DONE,
                response=response, attempts=attempts,
            )  # fmt: skip
        except ChorusError as err:
            retry = isinstance(err, TRANSIENT) and attempts < self.max_attempts
            result = task_pb2.TaskResult(
                task_id=task.task_id,
                status=task_pb2.TASK_STATUS_PENDING if retry else task_pb2.TASK_STATUS_FAILED,
                error_code=err.code_name, error_message=err.message, attempts=attempts,
            )  # fmt: skip
        finally:
            await cancel(keepalive)
        written = await _retrying(lambda: self._write(key, result, started), "result")
        if written is not None and result.status == task_pb2.TASK_STATUS_PENDING:
            # The mesh could not run it now (models gone, out of time): try again later.
            delay = min(REDELIVER_FIRST_S * 2**attempts, REDELIVER_MAX_S)
            await msg.nak(delay=delay)  # type: ignore[attr-defined]
        else:
            await msg.ack()  # type: ignore[attr-defined]

    async def _record(self, key: str) -> Record | None:
        """The stored result and its revision; None when there is none (expired)."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return task_pb2.TaskResult.FromString(entry.value or b""), int(entry.revision or 0)

    async def _write(
        self, key: str, result: task_pb2.TaskResult, known: Record | None = None
    ) -> Record | None:
        """Store `result` unless the record already holds a finished one: two deliveries of
        one task can run side by side (in-progress acks lost to a frozen node), and a late
        failure or retry must not overwrite the other's answer. A DONE replaces a FAILED.
        Compare-and-set from `known`, the record as the caller last saw it (None: none), read
        again only when another write came between. The record as written, or None when it
        was left as it was."""
        assert self._kv is not None
        value = result.SerializeToString()
        done = task_pb2.TASK_STATUS_DONE
        while True:
            try:
                if known is None:
                    return result, await self._kv.create(key, value)
                current, revision = known
                if current.status == done or (
                    current.status == task_pb2.TASK_STATUS_FAILED and result.status != done
                ):
                    return None
                return result, await self._kv.update(key, value, last=revision)
            except KeyWrongLastSequenceError:
                known = await self._record(key)

    async def _in_progress(self, msg: object) -> None:
        while True:
            await asyncio.sleep(self.ack_wait_s / 2)
            await msg.in_progress()  # type: ignore[attr-defined]
