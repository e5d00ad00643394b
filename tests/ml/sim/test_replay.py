"""The live loop's replay (:mod:`ml.sim.replay`) against a real autoscaler worker in-process: the
worker's targets size the replayed pool, the HPA twin runs on the same arrivals, gaps and the
trace's end are crossed, and the timeline keeps its latest steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from api.autoscaler.schemas import Reading
from api.autoscaler.worker import AutoscalerWorker
from ml.sim.config import SimConfig
from ml.sim.replay import Timeline, TraceReplay, action_toward, run
from ml.sim.traffic import load_trace
from prioritymax.settings import get_settings


@pytest.fixture
def worker(data_home):
    """A worker on an empty registry: every decision is its HPA rule (the fallback)."""
    get_settings.cache_clear()
    running = AutoscalerWorker(name="replay-worker").start()
    assert running.wait_loaded(60)
    yield running
    running.close()


def decide_with(worker):
    return lambda reading: worker.decide(Reading(**reading)).model_dump()


def series_of(path):
    config = SimConfig()
    return load_trace(path, step_seconds=config.step_seconds).scaled_to(config.mean_arrival_rate)


def test_with_no_policy_the_worker_sizes_the_pool_exactly_as_its_hpa_twin(worker, nasa_trace, tmp_path):
    """The worker falls back to the HPA rule, and the twin runs the HPA rule on the same arrivals:
    step for step the two pools are one, though the trace moves them."""
    series = series_of(nasa_trace)
    replay = TraceReplay(series, start_row=int(0.8 * len(series)), seed=3)
    timeline = Timeline(tmp_path / "timeline.jsonl")
    try:
        entries = list(run(replay, decide_with(worker), timeline, speed=0, steps=180))
    finally:
        replay.close()
    assert [e["workers"] for e in entries] == [e["hpa_workers"] for e in entries]
    assert len({e["workers"] for e in entries}) > 2
    assert {e["mode"] for e in entries} == {"hpa"}
    assert [e["queue_high"] for e in entries] == [e["hpa_queue_high"] for e in entries]
    # The served pool took the worker's targets: each step's pool is the one before's target.
    assert all(after["workers"] == before["target_workers"]
               for before, after in zip(entries, entries[1:], strict=False))
    lines = (tmp_path / "timeline.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == entries


def test_a_gap_starts_a_new_episode_and_the_trace_end_wraps_to_the_start(worker, small_trace, tmp_path):
    """The small trace has a two-hour gap after its first segment: the replay goes on past it (a new
    episode from the next segment's first row), and from the trace's last row back to its start."""
    series = series_of(small_trace)
    boundary = int(series.segment_bounds[1][0])
    replay = TraceReplay(series, start_row=boundary - 5, seed=0)
    try:
        entries = list(run(replay, decide_with(worker), Timeline(tmp_path / "t.jsonl"), speed=0, steps=10))
    finally:
        replay.close()
    assert [e["row"] for e in entries] == list(range(boundary - 5, boundary + 5))
    minutes = np.diff([np.datetime64(e["trace_time"].removesuffix("Z")) for e in entries]).astype(
        "timedelta64[m]").astype(int)
    assert minutes.tolist() == [1, 1, 1, 1, 121, 1, 1, 1, 1]
    last = len(series) - 1
    replay = TraceReplay(series, start_row=last - 2, seed=0)
    try:
        rows = [e["row"] for e in run(replay, decide_with(worker), Timeline(tmp_path / "u.jsonl"),
                                      speed=0, steps=6)]
    finally:
        replay.close()
    assert rows == [last - 2, last - 1, last, last - 2, last - 1, last]


def test_the_timeline_keeps_the_latest_steps(tmp_path):
    timeline = Timeline(tmp_path / "timeline.jsonl", keep=5)
    for step in range(23):
        timeline.append({"step": step})
        kept = [json.loads(line)["step"] for line in timeline.path.read_text().splitlines()]
        assert kept[-1] == step and len(kept) < 10
    assert kept[:1] >= [13]


@pytest.mark.parametrize(("current", "target", "delta"), [(10, 11, 1), (10, 20, 2), (10, 3, -2), (1, 0, 0),
                                                          (50, 60, 0), (10, 10, 0)])
def test_a_target_is_reached_as_far_as_one_step_goes(current, target, delta):
    config = SimConfig()
    assert config.scale_deltas[action_toward(config, current, target)] == delta


def test_a_start_outside_the_trace_is_refused(small_trace):
    series = series_of(small_trace)
    with pytest.raises(ValueError, match="outside the trace"):
        TraceReplay(series, start_row=len(series))
