import numpy as np
import pandas as pd
import pytest

from ml.sim.traffic import TraceError, load_trace, synthetic_series
from tests.conftest import write_trace


def test_nasa_trace_loads_with_its_gap_as_two_segments(nasa_trace):
    series = load_trace(nasa_trace)
    assert len(series) == 84_334
    assert series.num_segments == 2
    (lo0, hi0), (lo1, hi1) = series.segment_bounds
    assert series.timestamps[hi0 - 1] == np.datetime64("1995-07-28T17:32:00")
    assert series.timestamps[lo1] == np.datetime64("1995-08-01T04:00:00")
    # The Hurricane Erin shutdown is a run of zero rows: data, not a gap.
    erin = (series.timestamps >= np.datetime64("1995-08-02T00:00")) & (
        series.timestamps < np.datetime64("1995-08-03T00:00")
    )
    assert erin.sum() == 1440 and np.all(series.rates[erin] == 0)


def test_episodes_never_span_a_gap(nasa_trace):
    series = load_trace(nasa_trace)
    length = 720
    starts = series.valid_starts(length)
    assert np.all(series.segment_end(starts) >= starts + length)
    boundary = series.segment_bounds[0, 1]
    assert not np.any((starts > boundary - length) & (starts < boundary))
    assert len(starts) == len(series) - 2 * (length - 1)


def test_plain_datetime_strings_and_custom_columns(tmp_path):
    stamps = pd.date_range("2024-01-01", periods=10, freq="min").strftime("%Y-%m-%d %H:%M:%S")
    path = write_trace(tmp_path / "t.csv", stamps, range(10), header=("ts", "hits"))
    series = load_trace(path, timestamp_col="ts", count_col="hits")
    assert len(series) == 10
    assert series.timestamps[0] == np.datetime64("2024-01-01T00:00:00")
    assert series.rates[3] == pytest.approx(3 / 60)


@pytest.mark.parametrize(
    "rows, problem",
    [
        ("timestamp,requests\n", "has a header but no rows"),
        ("time,requests\n2024-01-01 00:00:00,1\n", "missing column 'timestamp'"),
        ("timestamp,count\n2024-01-01 00:00:00,1\n", "missing column 'requests'"),
        ("timestamp,requests\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,many\n",
         "data row 2 (line 3): column 'requests' value 'many' is not a number"),
        ("timestamp,requests\n2024-01-01 00:00:00,1\nyesterday,2\n",
         "value 'yesterday' is not a timestamp"),
        ("timestamp,requests\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,-4\n", "is negative"),
        ("timestamp,requests\n2024-01-01 00:01:00,1\n2024-01-01 00:00:00,2\n2024-01-01 00:02:00,2\n",
         "rows must be sorted"),
        ("timestamp,requests\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,2\n2024-01-01 00:01:00,2\n",
         "is a duplicate timestamp"),
        ("timestamp,requests\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,1\n"
         "2024-01-01 00:02:00,1\n2024-01-01 00:02:30,1\n", "breaks the trace interval of 60 s"),
    ],
)
def test_malformed_csv_names_the_problem(tmp_path, rows, problem):
    path = tmp_path / "bad.csv"
    path.write_text(rows)
    with pytest.raises(TraceError) as error:
        load_trace(path)
    assert problem in str(error.value)
    assert str(path) in str(error.value)


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TraceError, match="is empty"):
        load_trace(empty)
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "absent.csv")


def test_resampling_to_the_step(tmp_path):
    stamps = pd.date_range("2024-01-01", periods=8, freq="30s").strftime("%Y-%m-%dT%H:%M:%SZ")
    fine = load_trace(write_trace(tmp_path / "f.csv", stamps, [1, 2, 3, 4, 5, 6, 7, 8]))
    assert fine.step_seconds == 60 and len(fine) == 4
    assert fine.rates == pytest.approx(np.array([3, 7, 11, 15]) / 60)  # sums of pairs per minute
    stamps = pd.date_range("2024-01-01", periods=3, freq="120s").strftime("%Y-%m-%dT%H:%M:%SZ")
    coarse = load_trace(write_trace(tmp_path / "c.csv", stamps, [120, 240, 360]))
    assert len(coarse) == 6
    assert coarse.rates == pytest.approx([1, 1, 2, 2, 3, 3])
    with pytest.raises(TraceError, match="not whole multiples"):
        load_trace(tmp_path / "c.csv", step_seconds=90)


def test_scaling_and_time_ordered_split(small_trace):
    series = load_trace(small_trace).scaled_to(12.5)
    assert series.rates.mean() == pytest.approx(12.5)
    train, holdout = series.split(0.25)
    assert len(train) + len(holdout) == len(series)
    assert len(holdout) == pytest.approx(0.25 * len(series), abs=1)
    assert train.timestamps.max() < holdout.timestamps.min()
    # The gap stays a segment boundary in whichever part holds it.
    assert train.num_segments + holdout.num_segments in (3, 4)


def test_synthetic_is_seeded_with_daily_and_weekly_cycles():
    a = synthetic_series(days=14, seed=3)
    assert np.array_equal(a.rates, synthetic_series(days=14, seed=3).rates)
    assert not np.array_equal(a.rates, synthetic_series(days=14, seed=4).rates)
    assert a.rates.mean() == pytest.approx(1.0)
    hours = (a.timestamps.astype("datetime64[h]").astype(np.int64)) % 24
    assert a.rates[hours == 15].mean() > 1.5 * a.rates[hours == 3].mean()
    days = a.timestamps.astype("datetime64[D]").astype(np.int64)
    weekend = ((days - 4) % 7) >= 5
    assert a.rates[weekend].mean() < a.rates[~weekend].mean()


def test_episode_longer_than_every_segment_is_a_clear_error(small_trace):
    series = load_trace(small_trace)
    with pytest.raises(TraceError, match="longest segment"):
        series.valid_starts(5000)
