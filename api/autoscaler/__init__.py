"""The autoscaler worker (the seed's ``app/api/autoscaler.py``): scaling decisions from the
champion RL policy, with the predictor alongside and the HPA rule as a fallback, following the
control plane so a promotion is live on every worker without a restart."""

from api.autoscaler.routes import attach, router
from api.autoscaler.worker import AutoscalerWorker

__all__ = ["AutoscalerWorker", "attach", "router"]
