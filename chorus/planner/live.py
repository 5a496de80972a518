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
from dataclasses import replace

from nats.aio.client import Client
from nats.aio.msg import Msg

from chorus import subjects
from chorus.errors import ChorusError
from chorus.heartbeat import Heartbeat
from chorus.planner.allocation import Plan, PlanInputs, needs_replan, solve
from chorus.registry import Registry

log = logging.getLogger(__name__)
PLAN_SUBJECT = subjects.PLAN


def with_measurements(inputs: PlanInputs, heartbeats: list[Heartbeat]) -> PlanInputs:
    """The inputs with each (model, device) option's throughput and latency as measured."""
    measured: dict[tuple[str, str], list[float]] = {}
    latency: dict[tuple[str, str], list[float]] = {}
    for hb in heartbeats:
        if hb.ewma_ms > 0:
            key = (hb.model, hb.device)
            measured.setdefault(key, []).append(hb.capacity * 1000.0 / hb.ewma_ms)
            latency.setdefault(key, []).append(hb.ewma_ms)
    options = []
    for o in inputs.options:
        key = (o.model, o.device)
        if key in measured:
            o = replace(
                o,
                throughput_rps=sum(measured[key]) / len(measured[key]),
                latency_ms=sum(latency[key]) / len(latency[key]),
            )
        options.append(o)
    return replace(inputs, options=tuple(options))


class LivePlanner:
    def __init__(
        self, nc: Client, inputs: PlanInputs, *, every_s: float = 10.0, threshold: float = 0.2
    ) -> None:
        self.nc = nc
        self.inputs = inputs
        self.every_s = every_s
        self.threshold = threshold
        self.registry = Registry()
        self.plans: list[Plan] = []
        self._last: PlanInputs | None = None

    async def _on_heartbeat(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            self.registry.observe_json(msg.data, time.monotonic())

    async def step(self) -> Plan | None:
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
