"""The coalescer on a virtual clock: a lone call goes at once; calls that wait while the
model's slots are busy go as one, their reply cut back by rows; a task's deadline ends its
wait; a joined call's failure reaches each task."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from chorus.core.codec import from_tensor, to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import DeadlineExceeded, Unavailable
from chorus.core.heartbeat import Heartbeat
from chorus.pb import wire_pb2
from chorus.router.coalesce import Coalescer
from tests.support.fakes import FakeReplica, digest_of, elapsed, infer_body, run

ONE = [FakeReplica("m", "a").heartbeat()]  # one slot


class Member:
    """Answers each row i of a call with [i, i]; takes `delay_s`."""

    def __init__(self, delay_s: float = 0.01, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.calls: list[list[tuple[str, int]]] = []

    async def send(
        self,
        model: str,
        replicas: list[Heartbeat],
        body: bytes,
        digest: str,
        ctx: CallContext,
        tasks: list[tuple[str, int]],
    ) -> tuple[wire_pb2.InferReply, float]:
        assert digest == digest_of(body)
        self.calls.append(tasks)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise Unavailable("model m: boom")
        x = from_tensor(wire_pb2.InferCall.FromString(body).inputs[0])
        reply = wire_pb2.InferReply(model=model, outputs=[to_tensor("scores", x)])
        return reply, self.delay_s * 1000


def _ctx(budget_s: float = 5.0, priority: Priority = Priority.NORMAL) -> CallContext:
    return CallContext.start("t", priority, budget_s)


async def _ask(c: Coalescer, tag: str, rows: int, value: float, **kw: object) -> np.ndarray:
    body = infer_body(rows, value)
    reply, _ = await c.call("m", ONE, body, digest_of(body), kw.get("ctx") or _ctx(), tag)  # type: ignore[arg-type]
    return from_tensor(reply.outputs[0])


def test_a_lone_call_goes_at_once() -> None:
    async def main() -> None:
        member = Member()
        seen: list[tuple[str, int]] = []
        c = Coalescer(member.send, observe=lambda m, n: seen.append((m, n)))
        got = await _ask(c, "t1", 2, 1.0)
        assert got.shape == (2, 2) and elapsed() == pytest.approx(0.01)
        assert member.calls == [[("t1", 0)]] and seen == [("m", 1)]

    run(main())


def test_calls_waiting_for_a_busy_model_go_as_one_and_are_cut_back_by_rows() -> None:
    async def main() -> None:
        member = Member()
        waiting: list[int] = []
        c = Coalescer(member.send, waiting=lambda m, n: waiting.append(n))
        got = await asyncio.gather(
            _ask(c, "t1", 1, 1.0), _ask(c, "t2", 1, 2.0), _ask(c, "t3", 2, 3.0)
        )
        assert member.calls == [[("t1", 0)], [("t2", 1), ("t3", 2)]]
        np.testing.assert_array_equal(got[1], np.full((1, 2), 2.0))
        np.testing.assert_array_equal(got[2], np.full((2, 2), 3.0))
        assert waiting == [1, 1, -2]
        assert elapsed() == pytest.approx(0.02)

    run(main())


def test_calls_of_another_shape_or_priority_are_not_joined() -> None:
    async def main() -> None:
        member = Member()
        c = Coalescer(member.send)
        odd = wire_pb2.InferCall(inputs=[to_tensor("x", np.zeros((1, 3), np.float32))])
        body = odd.SerializeToString()
        await asyncio.gather(
            _ask(c, "t1", 1, 1.0),
            _ask(c, "t2", 1, 1.0),
            c.call("m", ONE, body, digest_of(body), _ctx(), "t3"),
            _ask(c, "t4", 1, 1.0, ctx=_ctx(priority=Priority.BATCH)),
        )
        assert sorted(map(len, member.calls)) == [1, 1, 1, 1]

    run(main())


def test_a_joined_call_carries_at_most_max_tasks_and_max_rows() -> None:
    async def main() -> None:
        member = Member()
        c = Coalescer(member.send, max_tasks=2, max_rows=3)
        await asyncio.gather(*(_ask(c, f"t{i}", 1, 0.0) for i in range(6)))
        assert [len(tasks) for tasks in member.calls] == [1, 2, 2, 1]

    run(main())


def test_a_task_whose_deadline_passes_while_waiting_is_never_sent() -> None:
    async def main() -> None:
        member = Member(delay_s=1.0)
        c = Coalescer(member.send)
        first = asyncio.ensure_future(_ask(c, "t1", 1, 0.0))
        await asyncio.sleep(0)
        with pytest.raises(DeadlineExceeded, match="waited to be joined"):
            await _ask(c, "t2", 1, 0.0, ctx=_ctx(0.1))
        await first
        assert member.calls == [[("t1", 0)]]

    run(main())


def test_a_joined_calls_failure_reaches_each_of_its_tasks() -> None:
    async def main() -> None:
        member = Member(fail=True)
        c = Coalescer(member.send)
        results = await asyncio.gather(
            *(_ask(c, f"t{i}", 1, 0.0) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, Unavailable) for r in results)
        assert len(member.calls) == 2

    run(main())


def test_with_joining_off_every_call_goes_at_once() -> None:
    async def main() -> None:
        member = Member()
        c = Coalescer(member.send, max_rows=0)
        await asyncio.gather(*(_ask(c, f"t{i}", 1, 0.0) for i in range(3)))
        assert len(member.calls) == 3 and elapsed() == pytest.approx(0.01)

    run(main())
