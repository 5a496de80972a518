"""Live planning: re-solve the allocation when measured throughput or demand drifts, and
publish the plan on `chorus.plan` for autoscalers and operators.

The measured part comes from heartbeats (a replica's slots and service time give its
throughput); everything else (demand, costs, capacities, latency caps) from the plan inputs
file. A new plan is solved only when `needs_replan` says the inputs moved past the threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from nats.aio.client import Client
from nats.aio.msg import Msg

from chorus.core import subjects
from chorus.core.errors import ChorusError
from chorus.core.registry import Registry
from chorus.planner.model import Allocation, PlanInputs
from chorus.planner.replan import needs_replan, with_measurements
from chorus.planner.solve import solve

log = logging.getLogger(__name__)
PLAN_SUBJECT = subjects.PLAN


class LivePlanner:
    def __init__(
        self, nc: Client, inputs: PlanInputs, *, every_s: float = 10.0, threshold: float = 0.2
    ) -> None:
        self.nc = nc
        self.inputs = inputs
        self.every_s = every_s
        self.threshold = threshold
        self.registry = Registry()
        self.plans: list[Allocation] = []
        self._last: PlanInputs | None = None

    async def _on_heartbeat(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            self.registry.observe_json(msg.data, time.monotonic())

    async def step(self) -> Allocation | None:
        """Solve and publish if the measured inputs drifted; the new plan, or None."""
        current = with_measurements(self.inputs, self.registry.live(time.monotonic()))
        if self._last is not None and not needs_replan(self._last, current, self.threshold):
            return None
        try:
            plan = solve(current)
        except ChorusError as err:
            log.warning("no plan: %s", err.message)
            return None
        self._last = current
        self.plans.append(plan)
        await self.nc.publish(PLAN_SUBJECT, json.dumps(plan.to_dict()).encode())
        return plan

    async def run(self, rounds: int = 0) -> None:
        sub = await self.nc.subscribe(subjects.HEARTBEATS, cb=self._on_heartbeat)
        await self.nc.publish(subjects.DISCOVER, b"")
        try:
            done = 0
            while not rounds or done < rounds:
                await asyncio.sleep(self.every_s)
                await self.step()
                done += 1
        finally:
            await sub.unsubscribe()
