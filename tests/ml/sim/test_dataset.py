import numpy as np
import pandas as pd

from ml.sim import SimConfig, load_trace, synthetic_series
from ml.sim.dataset import TARGET, build_queue_metrics, write_queue_metrics


def test_every_row_of_a_series_with_its_next_step_target(small_trace):
    series = load_trace(small_trace).scaled_to(10.0)
    frame = build_queue_metrics(series, block_steps=500, burn_in_steps=30)
    # One row per step, except the last step of each segment (no next step to predict).
    assert len(frame) == len(series) - series.num_segments
    assert frame["timestamp"].is_monotonic_increasing and frame["timestamp"].is_unique
    # Rows before a gap: the last row of the first segment is not there.
    last_before_gap = pd.Timestamp(series.timestamps[series.segment_bounds[0, 1] - 1], tz="UTC")
    assert last_before_gap not in set(frame["timestamp"])
    assert (frame[TARGET] >= 0).all() and np.isfinite(frame[TARGET]).all()


def test_target_is_the_next_queue_length_inside_a_block():
    series = synthetic_series(days=2, seed=0).scaled_to(10.0)
    frame = build_queue_metrics(series, block_steps=1000, burn_in_steps=0)
    interior = np.ones(len(frame) - 1, dtype=bool)
    interior[999::1000] = False  # block boundaries: the next row comes from another block
    assert np.array_equal(frame[TARGET].to_numpy()[:-1][interior],
                          frame["queue_len"].to_numpy()[1:][interior])
    queue_sum = frame[["queue_high", "queue_normal", "queue_low"]].sum(axis=1)
    assert np.allclose(queue_sum, frame["queue_len"])


def test_written_csv_round_trips(tmp_path):
    series = synthetic_series(days=1, seed=2).scaled_to(10.0)
    frame = build_queue_metrics(series, config=SimConfig())
    path = write_queue_metrics(frame, tmp_path / "out" / "queue_metrics.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == list(frame.columns)
    assert len(back) == len(frame)
    assert back["timestamp"].iloc[0].endswith("Z")
