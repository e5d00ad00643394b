import dagster as dg
import pandas as pd

from orchestration.definitions import defs
from prioritymax.settings import get_settings


def test_queue_metrics_materializes_into_the_data_home(small_trace, monkeypatch, data_home):
    monkeypatch.setenv("PRIORITYMAX_TRACE", str(small_trace))
    get_settings.cache_clear()
    result = dg.materialize([defs.resolve_assets_def("queue_metrics")])
    assert result.success
    metadata = result.asset_materializations_for_node("queue_metrics")[0].metadata
    path = data_home / "data" / "small" / "queue_metrics.csv"
    assert metadata["path"].value == str(path)
    assert metadata["rows"].value == len(pd.read_csv(path)) > 0
