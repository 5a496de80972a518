"""Live registry of model replicas, kept from their heartbeats.

A replica is alive while its last heartbeat is younger than `expiry_beats` of its own
announced intervals. The clock is passed in, so the registry is a plain data structure.
"""

from __future__ import annotations

from dataclasses import dataclass

from chorus.core.heartbeat import Heartbeat


@dataclass(frozen=True)
class Seen:
    heartbeat: Heartbeat
    at: float


class Registry:
    def __init__(self, expiry_beats: float = 3.0) -> None:
        self.expiry_beats = expiry_beats
        self._replicas: dict[str, Seen] = {}
        self._offered: dict[str, float] = {}

    def observe(self, hb: Heartbeat, now: float) -> None:
        self._replicas[hb.replica] = Seen(hb, now)
        for c in hb.capabilities:
            self._offered[c] = now

    def offered_s_ago(self, capability: str, now: float) -> float:
        """Seconds since a heartbeat last offered `capability` (inf: never): a capability gone
        a moment ago is more likely a lost connection than a removed model."""
        at = self._offered.get(capability)
        return now - at if at is not None else float("inf")

    def observe_json(self, data: bytes, now: float) -> Heartbeat:
        """Record a heartbeat as it arrived on the wire; ValueError when it is not one."""
        try:
            hb = Heartbeat.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"malformed heartbeat: {exc}") from None
        self.observe(hb, now)
        return hb

    def live(self, now: float) -> list[Heartbeat]:
        dead = [
            r
            for r, s in self._replicas.items()
            if now - s.at > self.expiry_beats * s.heartbeat.interval_s
        ]
        for r in dead:
            del self._replicas[r]
        return [s.heartbeat for s in self._replicas.values()]

    def age_s(self, replica: str, now: float) -> float:
        seen = self._replicas.get(replica)
        return now - seen.at if seen is not None else float("inf")

    def models_for(self, capability: str, now: float) -> dict[str, list[Heartbeat]]:
        """Live replicas of each model that offers `capability`, by model name."""
        out: dict[str, list[Heartbeat]] = {}
        for hb in self.live(now):
            if capability in hb.capabilities:
                out.setdefault(hb.model, []).append(hb)
        return dict(sorted(out.items()))

    def capabilities(self, now: float) -> list[str]:
        return sorted({c for hb in self.live(now) for c in hb.capabilities})
