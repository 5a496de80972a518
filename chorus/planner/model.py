"""What the planner reads and what it answers: options, demands and capacities in, replicas
and traffic splits out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from chorus.core.context import Priority
from chorus.core.errors import NotFound, ResourceExhausted

DEFAULT_TARGET_UTILISATION = 0.8
# --- inputs ----------------------------------------------------------------------------------

DemandKey = tuple[str, Priority]
"""(capability, priority): what the planner's per-demand answers are keyed by."""


@dataclass(frozen=True)
class ModelOption:
    """One model on one device kind, with what one replica of it measurably does."""

    model: str
    device: str
    capabilities: tuple[str, ...]
    throughput_rps: float
    """Requests per second one replica serves at full utilisation (measured)."""
    latency_ms: float
    """Service time of one request (measured)."""
    cost_per_replica: float
    max_replicas: int | None = None
    """Upper bound for this option alone; None: only the device's capacity bounds it."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.device)

    @property
    def name(self) -> str:
        return f"{self.model}@{self.device}"


@dataclass(frozen=True)
class Demand:
    """Requests per second asked of a capability at one priority, optionally with a latency cap."""

    capability: str
    priority: Priority
    """A Priority, or its label (coerced): critical is shorted last when capacity falls short."""
    rps: float
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "priority", Priority.parse(self.priority, "demand priority"))

    @property
    def key(self) -> DemandKey:
        return (self.capability, self.priority)

    @property
    def name(self) -> str:
        return f"{self.capability} ({self.priority.label})"


@dataclass(frozen=True)
class Capacity:
    """How many replicas a device kind can hold in all (CPU slots, GPUs)."""

    device: str
    max_replicas: int


@dataclass(frozen=True)
class PlanInputs:
    """Everything one solve depends on; compared by :func:`needs_replan`."""

    options: tuple[ModelOption, ...]
    demands: tuple[Demand, ...]
    capacities: tuple[Capacity, ...] = ()
    """Devices not listed are bounded only by each option's max_replicas."""
    target_utilisation: float = DEFAULT_TARGET_UTILISATION
    latency_weight: float = 0.0
    hop_ms: float | None = None
    """A NATS hop's measured cost, for placement (None: planner.placement's default)."""
    placement: tuple[tuple[str, str], ...] = ()
    """Shapes an operator forces, (capability, "cohost" | "apart")."""


# --- output ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    model: str
    device: str
    replicas: int
    served_rps: float
    capacity_rps: float
    """throughput_rps * replicas: what the replicas serve at full utilisation."""
    expected_utilisation: float
    """served_rps / capacity_rps (0 without replicas); at most the target utilisation."""
    cost: float
    latency_ms: float


@dataclass(frozen=True)
class Share:
    model: str
    device: str
    rps: float
    share: float
    """Fraction of the demand this option serves."""


@dataclass(frozen=True)
class Split:
    """How one demand is divided among options; the shares sum to 1 (rps to the demand)."""

    capability: str
    priority: Priority
    rps: float
    shares: tuple[Share, ...]

    def by_model(self) -> dict[str, float]:
        """Share of the demand per model, over all its devices."""
        out: dict[str, float] = defaultdict(float)
        for s in self.shares:
            out[s.model] += s.share
        return dict(out)


@dataclass(frozen=True)
class Allocation:
    rows: tuple[PlanRow, ...]
    splits: tuple[Split, ...]
    total_cost: float
    status: str
    """"optimal", or "time limit (gap …)" when HiGHS stopped with a feasible plan."""
    mean_latency_ms: float
    """rps-weighted mean service latency of the plan."""
    target_utilisation: float = DEFAULT_TARGET_UTILISATION

    def row(self, model: str, device: str) -> PlanRow:
        for r in self.rows:
            if (r.model, r.device) == (model, device):
                return r
        raise NotFound(f"allocation: no plan row for {model}@{device}")

    def replicas(self) -> dict[tuple[str, str], int]:
        return {(r.model, r.device): r.replicas for r in self.rows}

    def split(self, capability: str, priority: Priority | str) -> Split:
        wanted = Priority.parse(priority)
        for s in self.splits:
            if (s.capability, s.priority) == (capability, wanted):
                return s
        raise NotFound(f"allocation: no demand {capability} ({wanted.label}) in the plan")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what a router would publish on chorus.plan); priorities go as
        their labels."""
        out = asdict(self)
        for split in out["splits"]:
            split["priority"] = Priority(split["priority"]).label
        return out


class Infeasible(ResourceExhausted):
    """The demand exceeds what the options can serve; carries the exact shortfall."""

    def __init__(
        self,
        message: str,
        shortfall_rps: Mapping[DemandKey, float],
        total_shortfall_rps: float,
    ) -> None:
        super().__init__(message)
        self.shortfall_rps = dict(shortfall_rps)
        self.total_shortfall_rps = total_shortfall_rps
