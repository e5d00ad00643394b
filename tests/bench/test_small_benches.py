"""The quick single-process benchmarks still run and end with their JSON line (figures are not asserted).
One file per heavy script, so that pytest-xdist (one file per worker) spreads them over the cores."""

import pytest

from tests.bench.scripts import last_json_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sim_throughput_quick():
    figures = last_json_line(["bench/sim_throughput.py", "--quick"])
    assert {"scalar_steps_per_s", "vec_steps_per_s_64", "ratio_vec_vs_sync_8"} <= set(figures)


def test_predictor_bench_on_a_small_trace(small_trace):
    figures = last_json_line(["bench/predictor.py", "--data", str(small_trace), "--repeats", "1"])
    assert {"overhead_vs_raw_lightgbm", "duckdb_vs_pandas_feature_speedup", "rmse",
            "rmse_persistence", "rmse_seasonal_naive"} <= set(figures)
