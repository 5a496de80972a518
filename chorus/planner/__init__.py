"""The allocation planner: how many replicas of each model on each device, solved as a
mixed-integer program over measured numbers (solve.py), and written out as KEDA bounds (k8s.py).

A runtime package of its own, by job: model (what goes in and out), inputs (reading and
checking them), solve (the program), replan (when to solve again, what heartbeats measure),
live (re-solving on a running mesh), k8s (the overlay), cli (`chorus plan`), autoscale (what
the HPA and KEDA do with a metric). The router never imports it.
"""

from chorus.planner.inputs import load_inputs, parse_inputs
from chorus.planner.k8s import Overlay, keda_patches, scaled_object_models, write_overlay
from chorus.planner.model import (
    DEFAULT_TARGET_UTILISATION,
    Allocation,
    Capacity,
    Demand,
    Infeasible,
    ModelOption,
    PlanInputs,
    PlanRow,
    Share,
    Split,
)
from chorus.planner.replan import measured_options, needs_replan, replica_rps, with_measurements
from chorus.planner.solve import max_servable, solve

__all__ = [
    "DEFAULT_TARGET_UTILISATION",
    "Allocation",
    "Capacity",
    "Demand",
    "Infeasible",
    "ModelOption",
    "Overlay",
    "PlanInputs",
    "PlanRow",
    "Share",
    "Split",
    "keda_patches",
    "load_inputs",
    "max_servable",
    "measured_options",
    "needs_replan",
    "parse_inputs",
    "replica_rps",
    "scaled_object_models",
    "solve",
    "with_measurements",
    "write_overlay",
]
