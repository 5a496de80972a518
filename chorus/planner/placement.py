"""Placement: whether a capability's members run co-hosted (one process per group replica,
the whole task in one message, fused where they run) or each in its own service.

A member apart costs every task a message to it and one from it (the router's fan-out and
the answer to the fuser): `hop_ms` of CPU and wait each. Co-hosted, those hops are gone, but
the members share one process (one event loop, one interpreter) and scale together. So a
member whose own service time is small against a hop is worth co-hosting: the hop dominates
its cost. A member that is heavy (its service time many hops long) gains little and would
hold its group's process, so it stays apart, scaling on its own; so does one on a GPU, whose
replicas are placed and counted apart. A group needs two members at least. An operator can
force either shape per capability."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from chorus.core.errors import InvalidArgument
from chorus.planner.model import PlanInputs

Shape = Literal["cohost", "apart"]
SHAPES: tuple[Shape, ...] = ("cohost", "apart")
DEFAULT_HOP_MS = 0.45
"""A NATS hop's cost when none was measured: the router-to-member-and-back CPU per member of
the mesh's path on the 2-core VM (bench/README.md, topology floor), rounded up."""
LIGHT_HOPS = 4.0
"""A member is light enough to co-host when its service time is within this many hops."""


@dataclass(frozen=True)
class MemberCost:
    model: str
    service_ms: float
    """One request's measured service time (a heartbeat's ewma_ms, a plan option's latency)."""
    device: str = "cpu"


@dataclass(frozen=True)
class Placement:
    capability: str
    shape: Shape
    cohosted: tuple[str, ...]
    """The members in the group ((): none)."""
    apart: tuple[str, ...]
    why: str

    @property
    def group(self) -> str:
        """The group's name: the capability's, made one NATS subject token."""
        return "".join(c if c.isalnum() or c in "-_" else "-" for c in self.capability)


def place(
    capability: str,
    members: Iterable[MemberCost],
    hop_ms: float = DEFAULT_HOP_MS,
    forced: Shape | None = None,
) -> Placement:
    """The shape for one capability's members, and why, in words an operator can check."""
    costs = sorted(members, key=lambda m: m.model)
    if forced is not None and forced not in SHAPES:
        raise InvalidArgument(f"placement.{capability}: expected one of {SHAPES}, got {forced!r}")
    names = tuple(m.model for m in costs)
    if forced == "apart":
        return Placement(capability, "apart", (), names, "forced apart by the operator")
    on_gpu = [m for m in costs if m.device != "cpu"]
    bound = LIGHT_HOPS * hop_ms
    heavy = [m for m in costs if m.device == "cpu" and m.service_ms > bound]
    light = [m for m in costs if m.device == "cpu" and m.service_ms <= bound]
    if forced == "cohost":
        cpu = tuple(m.model for m in costs if m.device == "cpu")
        gpu = tuple(m.model for m in on_gpu)
        if len(cpu) < 2:
            raise InvalidArgument(
                f"placement.{capability}: cohost needs two CPU members, got {list(cpu)}"
            )
        why = "forced co-hosted by the operator" + (
            f"; {list(gpu)} on a GPU stay apart" if gpu else ""
        )
        return Placement(capability, "cohost", cpu, gpu, why)
    reasons = [
        f"{m.model} {m.service_ms:g} ms {'<=' if m in light else '>'} {bound:g} ms "
        f"({LIGHT_HOPS:g} hops of {hop_ms:g} ms)"
        for m in costs
        if m.device == "cpu"
    ] + [f"{m.model} on {m.device}" for m in on_gpu]
    if len(light) < 2:
        return Placement(
            capability, "apart", (), names,
            "fewer than two light CPU members: " + "; ".join(reasons),
        )  # fmt: skip
    apart = tuple(m.model for m in heavy + on_gpu)
    return Placement(
        capability, "cohost", tuple(m.model for m in light), tuple(sorted(apart)),
        "hops dominate the light members: " + "; ".join(reasons),
    )  # fmt: skip


def groups(placements: Iterable[Placement]) -> dict[str, list[str]]:
    """The co-hosted groups to start, by name; a model co-hosted for two capabilities goes
    with the first that names it (a process can hold it once)."""
    taken: set[str] = set()
    out: dict[str, list[str]] = {}
    for p in placements:
        if p.shape != "cohost":
            continue
        members = [m for m in p.cohosted if m not in taken]
        if len(members) >= 2:
            out[p.group] = members
            taken.update(members)
    return out


def forced_shapes(raw: Mapping[str, object] | None, where: str = "placement") -> dict[str, Shape]:
    """An operator's per-capability shapes, checked."""
    out: dict[str, Shape] = {}
    for capability, shape in (raw or {}).items():
        if shape not in SHAPES:
            raise InvalidArgument(f"{where}.{capability}: expected one of {SHAPES}, got {shape!r}")
        out[str(capability)] = "cohost" if shape == "cohost" else "apart"
    return out


def placements(inputs: PlanInputs) -> list[Placement]:
    """Every demanded capability's shape from the plan's own measurements: each member's
    service time on CPU where it has a CPU option (else its first), against `hop_ms`. Role
    capabilities (arbiter:, stack:, gate:) are served to the fuser, not fused: none."""
    forced = forced_shapes(dict(inputs.placement))
    hop = inputs.hop_ms if inputs.hop_ms is not None else DEFAULT_HOP_MS
    out = []
    for capability in dict.fromkeys(d.capability for d in inputs.demands):
        if ":" in capability:
            continue
        chosen: dict[str, MemberCost] = {}
        for o in inputs.options:
            if capability not in o.capabilities:
                continue
            have = chosen.get(o.model)
            if have is None or (have.device != "cpu" and o.device == "cpu"):
                chosen[o.model] = MemberCost(o.model, float(o.latency_ms), o.device)
        shape = forced.get(capability)
        out.append(place(capability, chosen.values(), hop, shape))
    return out
