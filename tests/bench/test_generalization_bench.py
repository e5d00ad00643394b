"""The generalization matrix still runs, small, on the NASA trace and on another CSV.
One file per heavy script, so that pytest-xdist (one file per worker) spreads them over the cores."""

import pytest

from tests.bench.scripts import last_json_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
