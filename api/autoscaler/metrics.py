"""Prometheus metrics of one autoscaler worker (its own registry: several workers in one process,
as in the tests and the benchmark, do not clash). ``GET /autoscaler/metrics`` renders them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class AutoscalerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter("prioritymax_autoscaler_decisions_total", "Scaling decisions served",
                                 ["mode"], registry=self.registry)
        self.decision_latency = Histogram("prioritymax_autoscaler_decision_seconds",
                                          "Time to make one decision (reading in, decision out)",
                                          buckets=DECISION_BUCKETS, registry=self.registry)
        self.model_version = Gauge("prioritymax_autoscaler_model_version",
                                   "Registry version in use (0: none loaded)", ["model"],
                                   registry=self.registry)
        self.swaps = Counter("prioritymax_autoscaler_model_swaps_total",
                             "Model versions swapped in while serving", ["model"], registry=self.registry)
        self.load_failures = Counter("prioritymax_autoscaler_model_load_failures_total",
                                     "Model versions refused (not loaded, the old one kept serving)",
                                     ["model"], registry=self.registry)
        self.fallbacks = Counter("prioritymax_autoscaler_fallbacks_total",
                                 "Decisions answered by a rule because the policy could not "
                                 "(no_policy: HPA; out_of_range: the residual policy's base rule)",
                                 ["reason"], registry=self.registry)
        self.load_forecast = Gauge("prioritymax_autoscaler_load_forecast",
                                   "The latest load forecast per tenant (the global layer: \"\"), in "
                                   "the predictor's target per step, by steps ahead and quantile "
                                   "(mean, p50, p90); dropped while a tenant has none",
                                   ["tenant", "horizon", "quantile"], registry=self.registry)
        self.forecast_unavailable = Counter("prioritymax_autoscaler_forecast_unavailable_total",
                                            "Decisions made without a load forecast (no_predictor, "
                                            "unsupported_target, short_history, error)",
                                            ["reason"], registry=self.registry)
        self.control_plane_up = Gauge("prioritymax_autoscaler_control_plane_connected",
                                      "1 while the live config stream is connected",
                                      registry=self.registry)

        self.keda_requests = Counter("prioritymax_autoscaler_keda_requests_total",
                                     "KEDA external scaler calls by RPC and outcome (ok, cached: "
                                     "answered by the ScaledObject's latest decision, bad_trigger, "
                                     "bad_reading, prometheus_unavailable)",
                                     ["rpc", "outcome"], registry=self.registry)
        self.keda_latency = Histogram("prioritymax_autoscaler_keda_get_metrics_seconds",
                                      "Time to answer KEDA's GetMetrics (reading from Prometheus and "
                                      "the decision included)", buckets=DECISION_BUCKETS + (0.25, 1.0),
                                      registry=self.registry)

        self.challenger_version = Gauge("prioritymax_autoscaler_challenger_version",
                                        "The registry's rl_agent challenger loaded in the shadow "
                                        "(0: none)", registry=self.registry)
        self.shadow_decisions = Counter("prioritymax_autoscaler_shadow_decisions_total",
                                        "The challenger's shadow decisions by outcome (agree, "
                                        "disagree: its target against the served one; dropped: the "
                                        "shadow thread was behind; incompatible: other classes; error)",
                                        ["outcome"], registry=self.registry)
        self.shadow_agreement = Gauge("prioritymax_autoscaler_shadow_agreement_ratio",
                                      "Share of the challenger's latest shadow decisions (up to 200) "
                                      "whose target equals the served decision's", registry=self.registry)
        self.shadow_actions = Counter("prioritymax_autoscaler_shadow_actions_total",
                                      "The challenger's would-be actions, by delta in workers",
                                      ["delta"], registry=self.registry)
        self.shadow_cost = Counter("prioritymax_autoscaler_shadow_cost_total",
                                   "Counterfactual cost (ml/sim/counterfactual.py, the reward's units) "
                                   "of the served decision (champion) and of the challenger's, summed "
                                   "over the shadow decisions", ["model"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
