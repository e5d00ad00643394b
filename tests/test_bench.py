"""The benchmark scripts still run and end with their JSON line (figures are not asserted)."""

import json
import subprocess
import sys

import pytest

from prioritymax.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def last_json_line(args):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sim_throughput_quick():
    figures = last_json_line(["bench/sim_throughput.py", "--quick"])
    assert {"scalar_steps_per_s", "vec_steps_per_s_64", "ratio_vec_vs_sync_8"} <= set(figures)


def test_predictor_bench_on_a_small_trace(small_trace):
    figures = last_json_line(["bench/predictor.py", "--data", str(small_trace), "--repeats", "1"])
    assert {"overhead_vs_raw_lightgbm", "duckdb_vs_pandas_feature_speedup", "rmse",
            "rmse_persistence", "rmse_seasonal_naive"} <= set(figures)


def test_ppo_benches_quick():
    figures = last_json_line(["bench/ppo_throughput.py", "--quick"])
    assert {"ours_steps_per_s", "sb3_steps_per_s", "ratio_vs_sb3", "time_to_hpa_ratio",
            "ours_max_steps_per_s"} <= set(figures)
    quality = last_json_line(["bench/policy_quality.py", "--train-seeds", "1", "--epochs", "2",
                              "--episodes", "5"])
    assert {"ppo_reward", "hpa_reward", "improvement_vs_hpa", "ppo_sla_violation_rate",
            "hpa_sla_violation_rate", "best_baseline", "best_baseline_reward",
            "improvement_vs_best_baseline", "improvement_vs_best_baseline_paired_ci95",
            "best_baseline_sla_violation_rate", "best_baseline_high_class_sla_violation_rate",
            "ppo_high_class_sla_violation_rate"} <= set(quality)
    assert quality["best_baseline"] in {"hpa", "erlang_c", "queue_threshold", "static"}


def test_generalization_matrix_quick(small_trace):
    """The whole matrix, small: every cell present with its best baseline, both sides' figures,
    the perfect-sizing bound, and the summary figures; on the NASA trace and on another CSV."""
    figures = last_json_line(["bench/generalization.py", "--quick", "--seeds", "1"])
    assert {"cells", "worst_improvement_vs_best_baseline", "mean_improvement_vs_best_baseline",
            "flash_crowd_improvement_vs_best_baseline", "high_class_sla_excess_worst",
            "perfect_sizing_bound", "mean_gap_closed"} <= set(figures)
    names = [c["cell"] for c in figures["cells"]]
    assert names == ["time", "load_0.3x", "load_3x", "overloaded_training", "synthetic_to_trace",
                     "trace_to_synthetic", "flash_crowds"]
    for cell in figures["cells"]:
        assert cell["best_baseline"] in cell["baselines"]
        best = cell["baselines"][cell["best_baseline"]]["reward"]
        assert best == max(b["reward"] for b in cell["baselines"].values())
        assert cell["perfect_sizing_bound"] > best  # the bound is unreachable: above every rule
        improvement = (cell["ppo"]["reward"] - best) / abs(best)
        assert improvement == pytest.approx(cell["improvement_vs_best_baseline"])
    assert figures["worst_improvement_vs_best_baseline"] == min(
        c["improvement_vs_best_baseline"] for c in figures["cells"])
    other = last_json_line(["bench/generalization.py", "--quick", "--seeds", "1", "--trace",
                            str(small_trace)])
    assert other["trace"] == str(small_trace) and len(other["cells"]) == 7


def test_scale_bench_quick():
    figures = last_json_line(["bench/scale.py", "--quick"])
    assert {"ratio_ours_vs_rllib", "asha_compute_fraction", "ddp_scaling", "asha_best",
            "fifo_best", "asha_epochs", "fifo_epochs"} <= set(figures)


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
