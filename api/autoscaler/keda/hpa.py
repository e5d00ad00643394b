"""The Horizontal Pod Autoscaler's replica formula for an external metric of type ``AverageValue``,
as Kubernetes applies it to what KEDA passes on from :class:`~api.autoscaler.keda.scaler.KedaScaler`
(``pkg/controller/podautoscaler/replica_calculator.go``, ``GetExternalPerPodMetricReplicas``).

It is here so that a simulated pool can be scaled exactly as a cluster would scale it (the closed-loop
test, a replay), and so the scaler's arithmetic is stated in code: see the scaler's module doc.
"""

from __future__ import annotations

import math

#: The HPA's default tolerance (``--horizontal-pod-autoscaler-tolerance``).
DEFAULT_TOLERANCE = 0.1


def desired_replicas(current: int, value: float, target: float, *, min_replicas: int, max_replicas: int,
                     tolerance: float = DEFAULT_TOLERANCE) -> int:
    """The replicas the HPA asks for: ``ceil(value / target)``, unless that is within ``tolerance``
    of ``current`` (then ``current``), within ``[min_replicas, max_replicas]``. At ``current == 0``
    the HPA does not act (KEDA activates the workload instead): ``current`` is returned."""
    if current <= 0:
        return current
    if target <= 0:
        raise ValueError("the HPA's target must be positive")
    # Kubernetes works in milli-units: KEDA turns each float into a milli-quantity, truncating
    # (``GenerateMetricInMili``: ``int64(value * 1000)``).
    usage, target_milli = int(value * 1000), int(target * 1000)
    ratio = usage / (target_milli * current)
    replicas = current if abs(1.0 - ratio) <= tolerance else math.ceil(usage / target_milli)
    return max(min_replicas, min(max_replicas, replicas))
