import numpy as np
import pandas as pd
import pytest

from ml.predictor.data import DataError, load_table
from ml.predictor.features import FeatureSpec, build_features
from ml.predictor.reference import build_features_pandas


def features(path, target, **kw):
    table = load_table(path, target=target)
    spec = FeatureSpec.for_table(table, **kw)
    return spec, build_features(table, spec)


@pytest.mark.parametrize("fixture, target", [("small_trace", "requests"),
                                             ("queue_metrics", "queue_next_sec")])
def test_duckdb_features_equal_the_pandas_reference(request, fixture, target):
    path = request.getfixturevalue(fixture)
    spec, duck = features(path, target)
    ref = build_features_pandas(path, spec)
    ahead = [c for k in spec.forecast_horizons[1:] for c in (f"label_{k}", f"seasonal_naive_{k}")]
    for column in ["label", "persistence", "seasonal_naive", *ahead, *spec.features]:
        a, b = duck[column].to_numpy(float), ref[column].to_numpy(float)
        scale = max(1.0, np.nanmax(np.abs(b)))
        # pandas' rolling std is an online update that leaves up to ~1e-4 where the true value is 0;
        # the DuckDB query's is exact on whole numbers (see the next test).
        atol = 1e-3 if "_std" in column else 1e-7 * scale
        assert np.allclose(a, b, rtol=1e-6, atol=atol, equal_nan=True), column


def test_exponentially_weighted_means_follow_their_recursion(small_trace):
    spec, frame = features(small_trace, "requests")
    known = frame["persistence"].to_numpy()
    for alpha, column in zip(spec.ewm_alphas, spec.ewm_features(), strict=True):
        mean = frame[column].to_numpy()
        assert mean[0] == known[0]
        assert mean[200] == pytest.approx(alpha * known[200] + (1 - alpha) * mean[199])


def test_rolling_std_is_exact_on_whole_numbers(small_trace):
    spec, frame = features(small_trace, "requests")
    known = frame["requests_lag0"].to_numpy()
    for row in range(300, 1800, 97):
        window = known[row - 14 : row + 1]
        assert frame["requests_std15"].iloc[row] == pytest.approx(np.std(window, ddof=1), abs=1e-12)


def test_labels_look_one_step_ahead(small_trace, queue_metrics):
    spec, frame = features(small_trace, "requests")
    assert spec.horizon == 1
    raw = pd.read_csv(small_trace)["requests"].to_numpy(float)
    assert np.array_equal(frame["label"].to_numpy()[:100], raw[1:101])
    assert np.array_equal(frame["requests_lag0"].to_numpy()[:100], raw[:100])
    assert spec.forecast_horizons == (1, 5, 15)
    for k in (5, 15):  # the target k steps ahead, and the same minute one day before it
        assert np.array_equal(frame[f"label_{k}"].to_numpy()[:100], raw[k:100 + k])
        row = spec.season + 10
        assert frame[f"seasonal_naive_{k}"].iloc[row] == raw[row + k - spec.season]
    spec, frame = features(queue_metrics, "queue_next_sec")
    assert spec.horizon == 0  # the column is already the next step's queue
    raw = pd.read_csv(queue_metrics)
    assert np.array_equal(frame["label"], raw["queue_next_sec"])
    assert np.array_equal(frame["queue_next_sec_lag1"][1:], raw["queue_next_sec"][:-1])
    assert "queue_next_sec" not in spec.exogenous


def test_no_future_value_feeds_a_row(small_trace, tmp_path):
    spec, frame = features(small_trace, "requests")
    raw = pd.read_csv(small_trace)
    cut = 1500
    changed = raw.copy()
    changed.loc[cut:, "requests"] = changed.loc[cut:, "requests"] * 7 + 3
    path = tmp_path / "changed.csv"
    changed.to_csv(path, index=False)
    _, other = features(path, "requests")
    same = frame[spec.features].iloc[:cut].to_numpy()
    assert np.array_equal(same, other[spec.features].iloc[:cut].to_numpy(), equal_nan=True)
    # ... while the row before the cut has a changed label: it is the future.
    assert frame["label"].iloc[cut - 1] != other["label"].iloc[cut - 1]


def test_lags_and_windows_never_reach_across_a_gap(small_trace):
    spec, frame = features(small_trace, "requests")
    first_after_gap = int(np.flatnonzero(frame["rn"].to_numpy() == 1)[1])
    row = frame.iloc[first_after_gap]
    assert row["seg"] == 2
    assert np.isnan(row["requests_lag1"]) and np.isnan(row["requests_diff1"])
    assert np.isnan(row["requests_mean5"]) and np.isnan(row["requests_max5"])
    window_full = frame.iloc[first_after_gap + 4]
    assert not np.isnan(window_full["requests_mean5"])
    assert np.isnan(frame.iloc[first_after_gap + 3]["requests_mean5"])
    # The row before the gap has no label: its next period is missing.
    assert np.isnan(frame.iloc[first_after_gap - 1]["label"])


def test_too_few_rows_for_the_lags(tmp_path):
    stamps = pd.date_range("2024-01-01", periods=200, freq="min", tz="UTC")
    path = tmp_path / "short.csv"
    pd.DataFrame({"timestamp": stamps, "requests": range(200)}).to_csv(path, index=False)
    with pytest.raises(DataError, match="too few rows for the chosen lags and windows"):
        features(path, "requests")
