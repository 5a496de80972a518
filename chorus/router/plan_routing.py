"""Routing by plan: for capabilities the allocation plan splits between equivalent models (a
cheap and an accurate variant, say), each task goes to one of them, drawn with the plan's
shares, instead of to every model of the capability.

Off unless `RouterConfig.plan_routing` is set: by default a capability is an ensemble and every
member answers every task.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any


class PlanSplits:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._splits: dict[tuple[str, str], dict[str, float]] = {}
        self.rng = rng or random.Random()

    def update(self, plan: Mapping[str, Any]) -> None:
        """Take the traffic split of a plan as published on chorus.plan."""
        splits: dict[tuple[str, str], dict[str, float]] = {}
        for s in plan.get("splits", []):
            shares: dict[str, float] = {}
            for share in s.get("shares", []):
                shares[share["model"]] = shares.get(share["model"], 0.0) + float(share["share"])
            if shares:
                splits[(s["capability"], s["priority"])] = shares
        self._splits = splits

    def update_json(self, data: bytes) -> None:
        self.update(json.loads(data))

    def pick(self, capability: str, priority: str, live: set[str]) -> str | None:
        """One live model for this task, by the plan's shares; None when the plan has no
        split for it (or none of its models is alive): then the whole ensemble answers."""
        shares = {
            m: w for m, w in self._splits.get((capability, priority), {}).items() if m in live
        }
        if not shares or sum(shares.values()) <= 0:
            return None
        models = sorted(shares)
        return self.rng.choices(models, weights=[shares[m] for m in models])[0]
