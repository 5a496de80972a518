"""The one place a stage's path is chosen."""

from __future__ import annotations

from chorus.router.metrics import RouterMetrics
from chorus.router.one_way import OneWay
from chorus.router.paths.base import Members, StagePath, StageTask
from chorus.router.paths.cascade import CascadePath
from chorus.router.paths.group import GroupPath
from chorus.router.paths.one_way import OneWayPath
from chorus.router.paths.two_hop import TwoHop


class Paths:
    def __init__(self, members: Members, metrics: RouterMetrics, one_way: OneWay | None) -> None:
        self.two_hop = TwoHop(members)
        self.cascade = CascadePath(members)
        self.group = GroupPath(members)
        self.one_way = (
            OneWayPath(one_way, members, metrics, fallback=self.two_hop)
            if one_way is not None
            else None
        )
        """The router -> members -> fuser -> router path for single-stage tasks (None: off)."""

    def choose(self, task: StageTask) -> StagePath:
        """A cascade when asked for one; else the co-hosted group holding every member, in
        one message; else one-way where it is on, but two-hop within a pipeline (its stages
        share calls to multi-task models) and for a multi-task member (the two-hop path cuts
        its reply down to the capability's head)."""
        if task.cascade.threshold:
            return self.cascade
        if task.shared is None and not task.roster.multi_task and task.roster.group is not None:
            return self.group
        if self.one_way is not None and task.shared is None and not task.roster.multi_task:
            return self.one_way
        return self.two_hop
