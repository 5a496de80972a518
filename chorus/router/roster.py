"""Who answers a stage: a capability's live member models, found in the registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from chorus.core.calls.clock import Clock
from chorus.core.context import CallContext
from chorus.core.errors import InvalidArgument, NotFound, Unavailable
from chorus.core.heartbeat import Heartbeat
from chorus.core.registry import Registry

RECENTLY_OFFERED_S = 10.0
"""A capability offered this recently and silent now is UNAVAILABLE (and waited for), not
NOT_FOUND: long enough to cover a client moving to another NATS node (about 3 s here)."""
WAIT_POLL_S = 0.05


@dataclass(frozen=True)
class Roster:
    """Who answers one stage: each member model's live replicas, and a heartbeat for its specs."""

    capability: str
    replicas: dict[str, list[Heartbeat]]

    @property
    def first(self) -> dict[str, Heartbeat]:
        return {m: r[0] for m, r in self.replicas.items()}

    @property
    def labels(self) -> Sequence[str]:
        """The capability's class labels (a multi-task model's per head)."""
        return _labels(next(iter(self.replicas.values()))[0], self.capability)

    @property
    def regression(self) -> bool:
        """Members answer with values, not classes (the fuser refuses a mix)."""
        return all(hb.regression for hb in self.first.values())

    @property
    def group(self) -> tuple[str, list[Heartbeat]] | None:
        """The co-hosted group that holds every member, and a heartbeat per group replica
        that holds them all (its first member's, named for the group replica: the members
        share its process and its load); None when no group replica holds the whole roster."""
        name = ""
        held: set[str] | None = None
        per_replica: dict[str, Heartbeat] = {}
        for beats in self.replicas.values():
            mine = set()
            for hb in beats:
                if not hb.group:
                    continue
                if name and hb.group != name:
                    return None
                name = hb.group
                mine.add(hb.group_replica)
                per_replica.setdefault(hb.group_replica, hb)
            held = mine if held is None else held & mine
        if not name or not held:
            return None
        return name, [replace(per_replica[r], replica=r) for r in sorted(held)]

    @property
    def multi_task(self) -> bool:
        """A member with several heads answers a capability through the two-hop path, which
        cuts its reply down to the capability's head."""
        return any(r and r[0].heads for r in self.replicas.values())


class Rosters:
    """Rosters from the registry's heartbeats, read on `clock` (the registry's, monotonic)."""

    def __init__(self, registry: Registry, clock: Clock) -> None:
        self.registry = registry
        self.clock = clock

    def roster(self, capability: str) -> Roster:
        """NOT_FOUND for a capability no model offers; UNAVAILABLE for one offered within
        RECENTLY_OFFERED_S (its replicas' heartbeats stopped: a NATS node lost, a restart)."""
        if not capability:
            raise InvalidArgument(
                "capability: empty; expected a capability such as 'classify/digits'"
            )
        now = self.clock.monotonic()
        replicas = self.registry.models_for(capability, now)
        if not replicas:
            ago = self.registry.offered_s_ago(capability, now)
            if ago <= RECENTLY_OFFERED_S:
                raise Unavailable(
                    f"capability {capability!r}: no heartbeat from its models for {ago:.1f} s "
                    "(a NATS node lost or the models restarting); retry"
                )
            live = self.registry.capabilities(now) or ["none"]
            raise NotFound(
                f"capability {capability!r}: no live model offers it "
                f"(live capabilities: {', '.join(live)})"
            )
        return Roster(capability, replicas)

    async def live_roster(self, capability: str, ctx: CallContext) -> Roster:
        """`roster`, but a capability whose models went quiet a moment ago is waited for (up to
        half the task's time left) instead of failed: the router's own NATS connection moving
        to another node silences every heartbeat for a few seconds."""
        give_up = self.clock.monotonic() + min(ctx.remaining_s() / 2, RECENTLY_OFFERED_S)
        while True:
            try:
                return self.roster(capability)
            except Unavailable:
                if self.clock.monotonic() + WAIT_POLL_S > give_up:
                    raise
            await self.clock.sleep(WAIT_POLL_S)


def _labels(hb: Heartbeat, capability: str) -> Sequence[str]:
    """Class labels of `capability` as this model gives them (a multi-task model per head)."""
    head = hb.heads.get(capability)
    return tuple(head["labels"]) if head else hb.labels
