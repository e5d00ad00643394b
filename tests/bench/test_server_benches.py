"""The benchmarks that start servers (config API, workflows, promotion latency, KEDA scaler) still run
and end with their JSON line.
One file per heavy script, so that pytest-xdist (one file per worker) spreads them over the cores."""

import pytest

from tests.bench.scripts import last_json_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_config_api_bench_quick():
    figures = last_json_line(["bench/config_api.py", "--quick"])
    assert {"writes_per_s", "get_p99_ms", "ws_propagation_p99_ms_20_subs",
            "client_eval_p99_us"} <= set(figures)


def test_workflows_bench_quick():
    figures = last_json_line(["bench/workflows.py", "--quick"])
    assert {"overhead_vs_raw_dagster", "submit_to_first_node_ms", "ws_event_p99_ms",
            "chain_overhead_vs_raw_dagster", "fan_overhead_vs_raw_dagster",
            "overhead_vs_raw_ephemeral"} <= set(figures)


def test_promotion_latency_bench_quick():
    figures = last_json_line(["bench/promotion_latency.py", "--quick"])
    assert {"promotion_to_live_p99_ms", "promotion_to_live_p50_ms", "decision_p50_ms", "decision_p99_ms",
            "decision_p99_ms_during_swap", "decision_p99_ms_outside_swap", "server_decision_p99_ms",
            "failed_requests_during_swap", "workers", "promotions", "promotion_to_live_p99_ms_shadowed",
            "shadow_overhead_p99_ms", "decision_p99_ms_with_shadow", "promotions_shadowed"} <= set(figures)
    assert figures["pointer_flips"] == figures["workers"] * figures["promotions_shadowed"]


def test_keda_scaler_bench_quick():
    figures = last_json_line(["bench/keda_scaler.py", "--quick"])
    names = {"grpc_get_metrics_p99_ms", "grpc_get_metrics_p50_ms", "grpc_get_metrics_cached_p99_ms",
             "grpc_get_metrics_posted_p99_ms", "prometheus_query_p99_ms", "grpc_get_metric_spec_p99_ms",
             "grpc_is_active_p99_ms", "prometheus_share_of_get_metrics_p50",
             "ratio_uncached_vs_cached_p99", "calls", "bench_s"}
    assert names <= set(figures)
    for name in names:
        assert isinstance(figures[name], int | float) and not isinstance(figures[name], bool), name
    assert figures["calls"] == 100 and figures["failed_calls"] == 0
