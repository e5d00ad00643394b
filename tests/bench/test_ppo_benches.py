"""The PPO throughput and policy-quality benchmarks still run and end with their JSON line.
One file per heavy script, so that pytest-xdist (one file per worker) spreads them over the cores."""

import pytest

from tests.bench.scripts import last_json_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
