"""How many replicas the autoscaler will ask for: the Kubernetes HPA rule plus KEDA's activation.

Why this exists: the thresholds in chorus/deploy/k8s/components/keda and .../hpa are numbers that
people pick, and a wrong one only shows under load in a real cluster. These pure functions give
the replica count that one autoscaler evaluation derives from a metric value, so tests (and the
allocation planner, which turns its plan into autoscaler bounds) can check a threshold against a
load without a cluster.

What is modelled, after Kubernetes' pkg/controller/podautoscaler/replica_calculator.go and
KEDA's scale executor:

* the HPA formula ``desired = ceil(current_replicas * current_value / target_value)``, using
  the controller's own floating-point steps, on values rounded to milli-units as Kubernetes
  quantities are;
* the tolerance band: while ``|1 - current_value / target_value| <= tolerance`` (0.1 by
  default) the replica count stays as it is, so small wobbles do not resize the Deployment;
* clamping to ``[min_replicas, max_replicas]``;
* KEDA's activation: with ``minReplicaCount: 0`` a target is scaled to zero when the metric is
  at or below ``activationThreshold``, and woken to one replica (after which the HPA takes
  over) when it rises above it.

What is not: anything that depends on time (stabilization windows, scale-up/down policies,
KEDA's ``cooldownPeriod``) and pods that are not ready. The result is where one evaluation goes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_TOLERANCE = 0.1
"""The HPA controller's default --horizontal-pod-autoscaler-tolerance."""

KEDA_DEFAULT_MIN_REPLICAS = 0
KEDA_DEFAULT_MAX_REPLICAS = 100
KEDA_DEFAULT_METRIC_TYPE = "AverageValue"

MetricType = Literal["Value", "AverageValue"]
"""How the HPA reads the value.

``Value``: the value is compared with the target as it is (a KEDA trigger with
``metricType: Value``, or an HPA ``Pods`` metric, whose value is the average over the pods).
``AverageValue``: the value is a total, to be spread over the replicas (KEDA's default).
"""


def _milli(value: float, what: str) -> int:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what}: expected a finite number >= 0, got {value!r}")
    return round(value * 1000)


def desired_replicas(
    current_replicas: int,
    metric_value: float,
    target_value: float,
    *,
    min_replicas: int = 1,
    max_replicas: int = KEDA_DEFAULT_MAX_REPLICAS,
    tolerance: float = DEFAULT_TOLERANCE,
    activation_threshold: float = 0.0,
    metric_type: MetricType = "Value",
) -> int:
    """The replica count one autoscaler evaluation asks for.

    `current_replicas` is the number of (ready) replicas now; `metric_value` what the metric
    query returns; `target_value` the threshold. With `min_replicas == 0` (KEDA
    ``minReplicaCount: 0``) the target may go to zero, decided by `activation_threshold`;
    otherwise the activation threshold plays no part, as in KEDA.
    """
    if current_replicas < 0:
        raise ValueError(f"current_replicas: expected >= 0, got {current_replicas}")
    if min_replicas < 0 or max_replicas < max(min_replicas, 1):
        raise ValueError(
            f"replica bounds: expected 0 <= min_replicas <= max_replicas and max_replicas >= 1, "
            f"got min {min_replicas}, max {max_replicas}"
        )
    if not tolerance >= 0:
        raise ValueError(f"tolerance: expected >= 0, got {tolerance!r}")
    if metric_type not in ("Value", "AverageValue"):
        raise ValueError(f"metric_type: expected Value or AverageValue, got {metric_type!r}")
    usage = _milli(metric_value, "metric_value")
    target = _milli(target_value, "target_value")
    if target <= 0:
        raise ValueError(f"target_value: expected > 0, got {target_value!r}")
    activation = _milli(activation_threshold, "activation_threshold")

    if min_replicas == 0:
        # KEDA owns 0 <-> 1: inactive means zero replicas (after cooldownPeriod); active from
        # zero means one replica, and the HPA (whose minReplicas is then 1) sizes it from there.
        if usage <= activation:
            return 0
        if current_replicas == 0:
            return 1
    elif current_replicas == 0:
        # KEDA brings a target that was scaled to zero by hand back to minReplicaCount.
        return min_replicas

    if metric_type == "Value":
        ratio = float(usage) / float(target)
        if abs(1.0 - ratio) <= tolerance:
            wanted = current_replicas
        else:
            wanted = math.ceil(ratio * float(current_replicas))
    else:
        ratio = float(usage) / (float(target) * float(current_replicas))
        if abs(1.0 - ratio) <= tolerance:
            wanted = current_replicas
        else:
            wanted = math.ceil(float(usage) / float(target))
    return max(max(min_replicas, 1), min(max_replicas, wanted))


@dataclass(frozen=True)
class PrometheusScaling:
    """The scaling rule of a KEDA ScaledObject with a Prometheus trigger."""

    target: str
    query: str
    target_value: float
    activation_threshold: float
    metric_type: MetricType
    min_replicas: int
    max_replicas: int

    def desired_replicas(
        self, current_replicas: int, metric_value: float, *, tolerance: float = DEFAULT_TOLERANCE
    ) -> int:
        """The replicas this ScaledObject asks for when its query reads `metric_value`."""
        return desired_replicas(
            current_replicas,
            metric_value,
            self.target_value,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            tolerance=tolerance,
            activation_threshold=self.activation_threshold,
            metric_type=self.metric_type,
        )


def prometheus_scaling(scaled_object: Mapping[str, Any]) -> PrometheusScaling:
    """Read the first Prometheus trigger of a ScaledObject (as parsed from YAML).

    KEDA's defaults apply where a field is absent: minReplicaCount 0, maxReplicaCount 100,
    metricType AverageValue, activationThreshold 0. Trigger metadata values are strings in
    KEDA, so numbers are parsed here; a missing query or threshold raises ValueError.
    """
    name = scaled_object.get("metadata", {}).get("name", "?")
    if scaled_object.get("kind") != "ScaledObject":
        raise ValueError(f"{name}: expected kind ScaledObject, got {scaled_object.get('kind')!r}")
    spec = scaled_object.get("spec", {})
    triggers = [t for t in spec.get("triggers", []) if t.get("type") == "prometheus"]
    if not triggers:
        raise ValueError(f"ScaledObject {name}: no trigger of type prometheus")
    trigger = triggers[0]
    meta = trigger.get("metadata", {})
    for key in ("query", "threshold"):
        if not meta.get(key):
            raise ValueError(f"ScaledObject {name}: prometheus trigger has no metadata.{key}")
    metric_type = trigger.get("metricType", KEDA_DEFAULT_METRIC_TYPE)
    if metric_type not in ("Value", "AverageValue"):
        raise ValueError(
            f"ScaledObject {name}: metricType: expected Value or AverageValue, got {metric_type!r}"
        )

    def number(key: str, default: str) -> float:
        raw = meta.get(key, default)
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ValueError(
                f"ScaledObject {name}: metadata.{key}: expected a number, got {raw!r}"
            ) from None

    return PrometheusScaling(
        target=str(spec.get("scaleTargetRef", {}).get("name", "")),
        query=str(meta["query"]),
        target_value=number("threshold", ""),
        activation_threshold=number("activationThreshold", "0"),
        metric_type=metric_type,
        min_replicas=int(spec.get("minReplicaCount", KEDA_DEFAULT_MIN_REPLICAS)),
        max_replicas=int(spec.get("maxReplicaCount", KEDA_DEFAULT_MAX_REPLICAS)),
    )
