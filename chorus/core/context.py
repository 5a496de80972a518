"""Per-call metadata that every hop reads: task id, priority and deadline, in NATS headers.

The deadline is absolute wall-clock time (epoch milliseconds), so each hop measures what is
left without knowing how long earlier hops took; hosts are assumed to run NTP.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from enum import IntEnum

from chorus.core.errors import DataLoss, DeadlineExceeded, InvalidArgument

TASK_ID = "Chorus-Task-Id"
PRIORITY = "Chorus-Priority"
DEADLINE = "Chorus-Deadline-Ms"
INPUT_SHA256 = "Chorus-Input-Sha256"
"""SHA-256 of the request body as its sender wrote it; the receiver checks it."""
CAPABILITY = "Chorus-Capability"
"""Which head of a multi-task model should answer ("*": every head); others ignore it."""
TASKS = "Chorus-Tasks"
"""How many tasks' rows a joined member call carries (absent: one), so members count load in
tasks, as autoscaling expects, whether or not the router joined calls."""
MAX_TASKS_PER_CALL = 4096


class Priority(IntEnum):
    """The one priority type, end to end. Lower value goes first; values match
    chorus.v1.Priority (and the Chorus-Priority header); `label` is the lowercase name used in
    subjects, metric labels and plan files."""

    CRITICAL = 1
    NORMAL = 2
    BATCH = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: Priority | str, where: str = "priority") -> Priority:
        """A Priority from itself or its label ("critical", "normal", "batch")."""
        if isinstance(value, Priority):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            raise InvalidArgument(
                f"{where}: expected critical, normal or batch, got {value!r}"
            ) from None

    @classmethod
    def from_wire(cls, value: int) -> Priority:
        if value == 0:
            return cls.NORMAL
        try:
            return cls(value)
        except ValueError:
            raise InvalidArgument(
                f"priority: expected one of 0 (unspecified), 1 (critical), 2 (normal), "
                f"3 (batch), got {value}"
            ) from None


@dataclass(frozen=True, slots=True)
class CallContext:
    task_id: str
    priority: Priority
    deadline_ms: int

    @classmethod
    def start(cls, task_id: str, priority: Priority, budget_s: float) -> CallContext:
        return cls(task_id, priority, int((time.time() + budget_s) * 1000))

    def remaining_s(self) -> float:
        return self.deadline_ms / 1000 - time.time()

    def check(self, where: str) -> float:
        """Seconds left; raises DeadlineExceeded naming `where` when none are."""
        left = self.remaining_s()
        if left <= 0:
            raise DeadlineExceeded(
                f"task {self.task_id}: deadline passed {-left * 1000:.1f} ms before {where}"
            )
        return left

    def to_headers(self) -> dict[str, str]:
        return {
            TASK_ID: self.task_id,
            PRIORITY: self.priority.name,
            DEADLINE: str(self.deadline_ms),
        }

    @classmethod
    def from_headers(
        cls, headers: dict[str, str] | None, *, default_budget_s: float
    ) -> CallContext:
        h = headers or {}
        try:
            priority = Priority[h.get(PRIORITY, "NORMAL")]
        except KeyError:
            raise InvalidArgument(
                f"header {PRIORITY}: expected CRITICAL, NORMAL or BATCH, got {h[PRIORITY]!r}"
            ) from None
        raw_deadline = h.get(DEADLINE)
        if raw_deadline is None:
            deadline_ms = int((time.time() + default_budget_s) * 1000)
        else:
            try:
                deadline_ms = int(raw_deadline)
            except ValueError:
                raise InvalidArgument(
                    f"header {DEADLINE}: expected epoch milliseconds, got {raw_deadline!r}"
                ) from None
        return cls(h.get(TASK_ID, ""), priority, deadline_ms)


def received_digest(data: bytes, headers: dict[str, str] | None, who: str) -> str:
    """The SHA-256 of a request body as it arrived, checked against the one its sender put in
    INPUT_SHA256 (absent: nothing to check); DataLoss naming `who` when they differ."""
    digest = hashlib.sha256(data).hexdigest()
    sent = (headers or {}).get(INPUT_SHA256)
    if sent is not None and sent != digest:
        raise DataLoss(
            f"{who}: input altered in transit: header {INPUT_SHA256} is {sent[:16]}..., "
            f"the body hashes to {digest[:16]}..."
        )
    return digest
