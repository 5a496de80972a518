"""A durable task's result record on a real JetStream: written by compare-and-set, so a late
write from a second delivery of the same task (one that ran side by side with the first,
because a frozen node lost its in-progress acks) never replaces a finished answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from chorus.core import subjects
from chorus.launch.natsserver import NatsServer
from chorus.pb import task_pb2
from chorus.router.durable import RESULTS, DurableTasks

S = task_pb2


@pytest.fixture
async def tasks(tmp_path: Path) -> AsyncIterator[DurableTasks]:
    with NatsServer(tmp_path / "js") as server:
        nc = await nats.connect(server.url)
        durable = DurableTasks(
            nc,
            None,
            workers=0,
            ack_wait_s=5,
            result_ttl_s=60,
            dedupe_window_s=5,  # type: ignore[arg-type]
        )
        durable._kv = await nc.jetstream().create_key_value(bucket=RESULTS)
        try:
            yield durable
        finally:
            await nc.close()


def _result(status: int, attempts: int = 1) -> task_pb2.TaskResult:
    return S.TaskResult(task_id="t", status=status, attempts=attempts)  # type: ignore[arg-type]


async def test_a_finished_result_is_never_replaced(tasks: DurableTasks) -> None:
    key = subjects.kv_key("t")
    assert await tasks._write(key, _result(S.TASK_STATUS_RUNNING))
    assert await tasks._write(key, _result(S.TASK_STATUS_DONE))
    for late in (S.TASK_STATUS_RUNNING, S.TASK_STATUS_PENDING, S.TASK_STATUS_FAILED):
        assert not await tasks._write(key, _result(late, attempts=2))
    assert (await tasks.get("t")).status == S.TASK_STATUS_DONE


async def test_a_done_replaces_a_failure_but_not_the_reverse(tasks: DurableTasks) -> None:
    key = subjects.kv_key("t")
    assert await tasks._write(key, _result(S.TASK_STATUS_FAILED))
    assert not await tasks._write(key, _result(S.TASK_STATUS_PENDING, attempts=2))
    assert await tasks._write(key, _result(S.TASK_STATUS_DONE, attempts=2))
    got = await tasks.get("t")
    assert (got.status, got.attempts) == (S.TASK_STATUS_DONE, 2)
