"""Predictive Erlang-C: forecasts from the past only, scaling ahead of a ramp, and its tuning."""

import json
from dataclasses import replace

import numpy as np
import pytest

from ml.sim import SimConfig
from ml.sim.forecasts import SeriesForecasts, forecast_horizon, forecast_series
from ml.sim.policies import ErlangCPolicy, PredictiveErlangCPolicy, make_baseline
from ml.sim.traffic import RateSeries, synthetic_series
from ml.sim.tuning import PREDICTIVE, evaluate_tuned, tune_baselines
from ml.sim.vec_env import PriorityMaxVecEnv

CONFIG = SimConfig(episode_steps=120)
HORIZON = forecast_horizon(CONFIG)
DAY = 1440  # one-minute steps
RAMP_START = 8 * 60  # 08:00 UTC


def ramp_series(days: int, seed: int = 0) -> RateSeries:
    """A synthetic day (``synthetic_series``'s timestamps and noise) with a sharp morning ramp:
    0.4 until 08:00, 2.0 from 08:10 to 18:00, then back down."""
    base = synthetic_series(days=days, seed=seed)
    minute = np.arange(len(base)) % DAY
    level = np.interp(minute, [0, RAMP_START, RAMP_START + 10, 18 * 60, 18 * 60 + 10, DAY],
                      [0.4, 0.4, 2.0, 2.0, 0.4, 0.4])
    noise = np.random.default_rng(seed).normal(1.0, 0.03, len(base))
    return replace(base, name="ramp", rates=level * noise).scaled_to(CONFIG.mean_arrival_rate)


@pytest.fixture(scope="module")
def ramp() -> tuple[RateSeries, RateSeries]:
    return ramp_series(8).split(0.25)  # 6 days to train on, 2 to run


def test_forecasts_never_look_ahead(ramp):
    train, test = ramp
    forecasts = forecast_series(train, test, HORIZON)
    assert len(forecasts) == len(test) and forecasts.horizon_steps == HORIZON
    assert np.isfinite(forecasts.p90).mean() > 0.9
    t = RAMP_START - 20
    changed = replace(test, rates=np.r_[test.rates[: t + 1], test.rates[t + 1:] * 3.0 + 5.0])
    again = forecast_series(train, changed, HORIZON)
    np.testing.assert_allclose(again.p90[: t + 1], forecasts.p90[: t + 1], rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(again.mean[: t + 1], forecasts.mean[: t + 1], rtol=1e-9, equal_nan=True)
    assert not np.allclose(again.p90[t + HORIZON + 1:], forecasts.p90[t + HORIZON + 1:])


def test_rows_without_history_have_no_forecast(ramp):
    train, test = ramp
    # Not contiguous with the training part: the forecaster has no history before row 0.
    alone = replace(test, timestamps=test.timestamps + np.timedelta64(7, "D"))
    forecasts = forecast_series(train, alone, HORIZON)
    assert np.isnan(forecasts.p90[:100]).all()
    assert np.isfinite(forecasts.p90[-100:]).all()


def pools(policy, series: RateSeries, start: int) -> np.ndarray:
    env = PriorityMaxVecEnv(1, CONFIG, series)
    try:
        obs, info = env.reset(seed=0, options={"start_index": start})
        policy.reset(1)
        pool = []
        for _ in range(60):
            obs, _, _, _, info = env.step(policy.act(obs, info))
            pool.append(float(info["active_workers"][0] + info["warming_workers"][0]))
    finally:
        env.close()
    return np.array(pool)


def test_predictive_erlang_c_scales_up_before_the_ramp(ramp):
    train, test = ramp
    forecasts = forecast_series(train, test, HORIZON)
    start = DAY + RAMP_START - 30  # the second held-out morning, half an hour before the ramp
    predictive = pools(PredictiveErlangCPolicy(CONFIG, forecasts=forecasts), test, start)
    reactive = pools(ErlangCPolicy(CONFIG), test, start)
    midway = (reactive[0] + reactive[-1]) / 2
    first = {name: int(np.argmax(pool >= midway)) for name, pool in
             (("predictive", predictive), ("reactive", reactive))}
    assert reactive[-1] > reactive[0] + 5  # the ramp is there, and the reactive rule follows it
    assert first["predictive"] < first["reactive"], first
    assert first["predictive"] <= 30 + 5  # about when the ramp starts, not after it


def test_policy_falls_back_to_the_current_rate_without_a_forecast():
    forecasts = SeriesForecasts("x", HORIZON, np.full(3, np.nan), np.array([np.nan, 30.0, 1.0]))
    policy = make_baseline(PREDICTIVE, CONFIG, forecasts=forecasts)
    info = {"arrival_rate_smoothed": np.array([10.0, 10.0, 10.0]), "series_index": np.arange(3)}
    assert policy.planned_rate(info).tolist() == [10.0, 30.0, 10.0]
    with pytest.raises(ValueError, match="forecasts"):
        make_baseline(PREDICTIVE, CONFIG)


def test_tuned_baselines_include_predictive_erlang_c_given_a_training_part(ramp):
    train, test = ramp
    tuned = tune_baselines(CONFIG, train, seeds=range(2), small=True)
    assert PREDICTIVE in tuned
    json.dumps(tuned)  # parameters stay plain values
    evaluations = evaluate_tuned(tuned, CONFIG, test, [100, 101], train=train)
    assert set(evaluations) == set(tuned)
    assert evaluations[PREDICTIVE].episodes == 2
    # Without the training part there is nothing honest to forecast with: the rule is left out.
    assert PREDICTIVE not in evaluate_tuned(tuned, CONFIG, test, [100, 101])


def test_too_short_a_training_part_leaves_predictive_erlang_c_out():
    short = synthetic_series(days=1).scaled_to(CONFIG.mean_arrival_rate).slice(0, 200, "short")
    tuned = tune_baselines(CONFIG, short, seeds=range(1), small=True, only=("erlang_c", PREDICTIVE))
    assert set(tuned) == {"erlang_c"}
