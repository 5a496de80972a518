"""A circuit breaker per replica: stop sending to a replica that keeps failing, try it again
after a cool-down with a single probe, and close once the probe succeeds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class State(Enum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass
class CircuitBreaker:
    failures_to_open: int = 3
    cooldown_s: float = 5.0
    state: State = State.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False

    def available(self, now: float) -> bool:
        """Could a request go here now? (Asks without taking the half-open probe.)"""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            return now - self.opened_at >= self.cooldown_s
        return not self.probing

    def allow(self, now: float) -> bool:
        """May a request go to this replica now? In half-open state only one probe may."""
        if self.state is State.OPEN and now - self.opened_at >= self.cooldown_s:
            self.state, self.probing = State.HALF_OPEN, False
        if self.state is State.CLOSED:
            return True
        if self.state is State.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.state, self.failures, self.probing = State.CLOSED, 0, False

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.state is State.HALF_OPEN or self.failures >= self.failures_to_open:
            self.state, self.opened_at, self.probing = State.OPEN, now, False
