"""Data assets. ``queue_metrics`` is the simulator's per-step dataset, the predictor's input."""

import dagster as dg

from ml.sim.config import SimConfig
from ml.sim.dataset import TARGET, build_queue_metrics, dataset_path, write_queue_metrics
from ml.sim.traffic import load_trace
from prioritymax.settings import get_settings


@dg.asset(group_name="data", kinds={"csv"})
def queue_metrics(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Replay the default trace (PRIORITYMAX_TRACE, else the NASA trace) through the simulator
    under the HPA rule and write ``data/<trace>/queue_metrics.csv`` in the data home."""
    settings = get_settings()
    config = SimConfig()
    series = load_trace(settings.trace_path, step_seconds=config.step_seconds)
    frame = build_queue_metrics(series.scaled_to(config.mean_arrival_rate), config=config)
    path = write_queue_metrics(frame, dataset_path(settings.data_dir, series.name))
    context.log.info("wrote %d rows to %s", len(frame), path)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "rows": len(frame),
            "segments": series.num_segments,
            "mean_queue_len": float(frame["queue_len"].mean()),
            f"mean_{TARGET}": float(frame[TARGET].mean()),
        }
    )
