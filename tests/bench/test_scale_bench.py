"""The scale-out training benchmark (Ray, ASHA, DDP) still runs and ends with its JSON line.
One file per heavy script, so that pytest-xdist (one file per worker) spreads them over the cores."""

import pytest

from tests.bench.scripts import last_json_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_scale_bench_quick():
    figures = last_json_line(["bench/scale.py", "--quick"])
    assert {"ratio_ours_vs_rllib", "asha_compute_fraction", "ddp_scaling", "asha_best",
            "fifo_best", "asha_epochs", "fifo_epochs"} <= set(figures)
