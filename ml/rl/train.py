"""``train_rl`` / ``eval_rl`` / ``canary_rl``: PPO runs on a traffic source, their evaluation
against the baselines, and the RL gate.

Traffic: the synthetic profile by default, or a trace (``--trace CSV``); with a trace, PPO trains
on its earlier part and is evaluated on the held-out latest part (``holdout_fraction``), so a
score never comes from the days the policy was trained on. Evaluations use fixed seeds
(:data:`EVAL_SEEDS_FROM` onwards): every policy - PPO, HPA, static, Erlang-C, an earlier
champion - sees the very same episodes, and differences are paired per episode.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.rl.policy import PPOPolicy
from ml.rl.ppo import Args, TrainState, load_checkpoint, train
from ml.rl.tracking import forget_metadata
from ml.sim.config import SimConfig
from ml.sim.evaluate import PolicyEvaluation, evaluate_policy, mean_ci, paired_improvement
from ml.sim.policies import make_baseline
from ml.sim.traffic import RateSeries, TraceError, load_trace, synthetic_series
from ml.sim.tuning import TUNED_BASELINES, best_of, evaluate_tuned, tune_baselines

log = logging.getLogger(__name__)

EVAL_SEEDS_FROM = 10_000
#: The gate's reward floor: the candidate's mean episode reward may trail the best tuned rule's by
#: at most this share (a tie within noise is not a loss; anything more is).
REWARD_MARGIN = 0.02
#: The gate's high-class SLA condition: the candidate's violation rate of the highest class may
#: exceed the upper 95% bound of the best rule's by at most this much (absolute, a share of tasks).
HIGH_CLASS_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class Traffic:
    """The series PPO trains on, the one it is evaluated on, and a name for checkpoints."""

    train: RateSeries
    evaluation: RateSeries
    name: str


_SYNTHETIC = "synthetic:seed"
_TRAIN_PART = ":train"


def traffic_for(trace: str | Path | None, config: SimConfig, holdout_fraction: float = 0.2,
                seed: int = 0) -> Traffic:
    """The traffic of a run; its ``name`` (kept in checkpoints) is read back by
    :func:`traffic_named`."""
    if trace is None or str(trace) == "synthetic":
        series = synthetic_series(step_seconds=config.step_seconds, seed=seed)
        series = series.scaled_to(config.mean_arrival_rate)
        return Traffic(series, series, f"{_SYNTHETIC}{seed}")
    series = load_trace(trace, step_seconds=config.step_seconds).scaled_to(config.mean_arrival_rate)
    train_part, holdout = series.split(holdout_fraction)
    return Traffic(train_part, holdout,
                   f"{Path(trace).resolve()}{_TRAIN_PART}{1 - holdout_fraction:.2f}")


def traffic_named(name: str, config: SimConfig) -> Traffic:
    """The traffic a checkpoint was trained on, from the name :func:`traffic_for` gave it."""
    if name.startswith(_SYNTHETIC):
        return traffic_for(None, config, seed=int(name.removeprefix(_SYNTHETIC)))
    path, _, part = name.rpartition(_TRAIN_PART)
    return traffic_for(path, config, holdout_fraction=round(1 - float(part), 6))


def eval_seeds(episodes: int) -> list[int]:
    return list(range(EVAL_SEEDS_FROM, EVAL_SEEDS_FROM + episodes))


def evaluator(traffic: RateSeries, config: SimConfig, episodes: int) -> Callable[[TrainState], float]:
    """Mean reward of the policy being trained, on fixed held-out episodes (``train``'s
    ``evaluate`` hook: charts/eval_reward, and Tune's metric)."""
    seeds = eval_seeds(episodes)

    def evaluate(state: TrainState) -> float:
        policy = PPOPolicy.from_state(state)
        return float(evaluate_policy(policy, traffic, seeds=seeds, config=config).reward.mean())

    return evaluate


def train_rl(
    args: Args,
    checkpoint: Path,
    *,
    trace: str | Path | None = None,
    holdout_fraction: float = 0.2,
    fresh: bool = False,
    stop_after: int | None = None,
    mlflow: bool = False,
    wandb: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train (or resume) PPO; evaluate against HPA every ``eval_every`` epochs; return a summary."""
    config = SimConfig()
    traffic = traffic_for(trace, config, holdout_fraction)
    evaluate = evaluator(traffic.evaluation, config, args.eval_episodes)
    forget_metadata(checkpoint)

    trackers = []
    if mlflow:
        from ml.rl.tracking import MlflowTracker

        trackers.append(MlflowTracker(args, checkpoint, traffic.name))
    if wandb:
        from ml.rl.tracking import WandbTracker

        trackers.append(WandbTracker(args, traffic.name))

    def on_epoch(metrics: dict[str, float]) -> None:
        for tracker in trackers:
            tracker.log_epoch(metrics)

    started = time.perf_counter()
    try:
        state = train(args, traffic=traffic.train, traffic_name=traffic.name,
                      checkpoint=checkpoint, config=config, fresh=fresh, stop_after=stop_after,
                      evaluate=evaluate, on_epoch=on_epoch, progress=progress)
        result: dict[str, Any] = {
            "checkpoint": str(checkpoint),
            "epochs": state.epoch,
            "global_step": state.global_step,
            "traffic": traffic.name,
            "num_envs": args.num_envs,
            "device": args.device,
            "seconds": round(time.perf_counter() - started, 2),
            **final_scores(checkpoint, args.eval_episodes),
            **history_summary(state.history),
        }
        for tracker in trackers:
            result |= tracker.finish(result)
        trackers.clear()
    finally:
        for tracker in trackers:
            tracker.abort()
    return result


def history_summary(history: list[dict[str, float]]) -> dict[str, float | None]:
    """Mean steps/s and the latest mean episodic return of a run's per-epoch metrics."""
    return {
        "sps": float(np.mean([m["charts/SPS"] for m in history])) if history else None,
        "episodic_return": next((m["charts/episodic_return"] for m in reversed(history)
                                 if "charts/episodic_return" in m), None),
    }


def final_scores(checkpoint: Path, episodes: int) -> dict[str, float]:
    """A finished run's policy and the (untuned) HPA rule on the same held-out episodes; the
    gate and ``eval_rl`` compare with every rule tuned."""
    judged = judge(checkpoint, episodes)
    hpa = judged.run(make_baseline("hpa", judged.config))
    return {"eval_reward": float(judged.evaluation.reward.mean()),
            "hpa_reward": float(hpa.reward.mean()), "eval_episodes": episodes}


@dataclasses.dataclass(frozen=True)
class Judgement:
    """A checkpoint run over fixed held-out episodes; ``run`` runs any other policy on them."""

    config: SimConfig
    traffic: RateSeries
    seeds: list[int]
    evaluation: PolicyEvaluation
    train: RateSeries  # the training part: what the baselines are tuned on

    def run(self, policy) -> PolicyEvaluation:
        return evaluate_policy(policy, self.traffic, seeds=self.seeds, config=self.config)

    def tuned_baselines(self, tuned: dict[str, dict[str, Any]] | None = None,
                        rules: Sequence[str] | None = None,
                        ) -> tuple[dict[str, Any], dict[str, PolicyEvaluation]]:
        """Every rule (or just ``rules``) tuned on the training part (or with ``tuned``'s
        parameters, tuned there before, as ``eval_rl`` reports them), then run on these episodes.
        HPA is always among them: every comparison reports it."""
        if rules is not None:
            if unknown := set(rules) - set(TUNED_BASELINES):
                raise ValueError(f"no tuned rule {sorted(unknown)}; choose among {list(TUNED_BASELINES)}")
            rules = sorted(set(rules) | {"hpa"})
        if tuned is None:
            tuned = tune_baselines(self.config, self.train, only=rules)
        elif rules is not None:
            tuned = {name: params for name, params in tuned.items() if name in rules}
        return tuned, evaluate_tuned(tuned, self.config, self.traffic, self.seeds, train=self.train)


def improvement_on_mean(candidate: PolicyEvaluation, baseline: PolicyEvaluation) -> float:
    """The candidate's improvement over a baseline on mean episode reward, relative to the
    baseline's: the figure the RL gate holds to (the paired per-episode one is reported beside)."""
    return float((candidate.reward.mean() - baseline.reward.mean()) / abs(baseline.reward.mean()))


def judge(checkpoint: Path, episodes: int, trace: str | Path | None = None) -> Judgement:
    """Evaluate a checkpoint on ``trace``'s held-out part, else on its own training traffic's
    evaluation part, with its own simulator configuration."""
    payload = load_checkpoint(checkpoint)
    config = SimConfig.from_dict(payload["sim_config"])
    if trace is not None:
        parts = traffic_for(trace, config)
    else:
        try:
            parts = traffic_named(payload["traffic"], config)
        except TraceError as error:  # e.g. a pipeline candidate's copy of the trace, since removed
            raise TraceError(f"{error} (the traffic this policy was trained on); pass --trace CSV to "
                             "evaluate it on another trace's held-out part") from None
    seeds = eval_seeds(episodes)
    evaluation = evaluate_policy(PPOPolicy.from_payload(payload), parts.evaluation, seeds=seeds,
                                 config=config)
    return Judgement(config, parts.evaluation, seeds, evaluation, parts.train)


def eval_rl(
    checkpoint: Path,
    episodes: int = 10,
    *,
    trace: str | Path | None = None,
    rules: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The seed's ``{"avg_reward", "std_reward", "episodes"}`` for the checkpoint, plus every rule
    (or just ``rules``, HPA always) tuned on the training part and run on the same episodes, the
    best of them, and PPO's improvement over it (on mean reward, as the gate judges; the paired
    figure beside) and over HPA (paired)."""
    judged = judge(checkpoint, episodes, trace)
    ppo, traffic = judged.evaluation, judged.traffic
    tuned, baselines = judged.tuned_baselines(rules=rules)
    best = best_of(baselines)
    return {
        "avg_reward": float(ppo.reward.mean()),
        "std_reward": float(ppo.reward.std(ddof=1)) if episodes > 1 else 0.0,
        "episodes": episodes,
        "traffic": traffic.name,
        "policies": {"ppo": ppo.summary(), **{n: e.summary() for n, e in baselines.items()}},
        "tuned": tuned,
        "best_baseline": best,
        "improvement_vs_best_baseline": improvement_on_mean(ppo, baselines[best]),
        "improvement_vs_best_baseline_paired": paired_improvement(ppo, baselines[best]),
        "improvement_vs_hpa": paired_improvement(ppo, baselines["hpa"]),
    }


def high_class_check(candidate: PolicyEvaluation, baseline: PolicyEvaluation) -> dict[str, Any]:
    """The highest class's SLA violation rate of both, and whether the candidate stays within the
    baseline's upper 95% bound (plus :data:`HIGH_CLASS_TOLERANCE`)."""
    mine, theirs = candidate.violation_rate[:, 0], baseline.violation_rate[:, 0]
    bound = mean_ci(theirs)
    upper = bound["mean"] if bound["ci95"][1] is None else bound["ci95"][1]
    return {"candidate": float(mine.mean()), "baseline": float(theirs.mean()),
            "baseline_ci95_high": float(upper),
            "passed": bool(mine.mean() <= upper + HIGH_CLASS_TOLERANCE)}


def canary_rl(
    checkpoint: Path,
    episodes: int = 16,
    *,
    trace: str | Path | None = None,
    champion_checkpoint: Path | None = None,
    use_registry: bool = True,
    tuned: dict[str, dict[str, Any]] | None = None,
    rules: Sequence[str] | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """The RL gate, on the candidate's own held-out episodes:

    - ``vs_best_baseline``: every rule (HPA, Erlang-C, queue-threshold, static, predictive
      Erlang-C; or just ``rules``, HPA always) is tuned on the candidate's training part; the
      candidate's improvement over the best of them, on mean episode reward, must be at least
      ``-REWARD_MARGIN`` (the paired per-episode figure and its CI are reported beside it);
    - ``high_class_sla``: its highest class's SLA violation rate must not exceed that rule's upper
      95% bound (:func:`high_class_check`): reward is never bought with high-priority misses;
    - ``vs_champion``: it must beat the registry's champion (mean paired improvement above zero).

    ``tuned``: the rules' parameters already tuned on this candidate's training part (the
    pipeline's evaluation did it), so they are not tuned twice. ``version``: the registered
    ``rl_agent`` version the checkpoint was resolved from (``--model``), which gets the result.
    """
    judged = judge(checkpoint, episodes, trace)
    candidate = judged.evaluation
    tuned, baselines = judged.tuned_baselines(tuned, rules)
    best_name = best_of(baselines)
    best, hpa = baselines[best_name], baselines["hpa"]
    vs_best = improvement_on_mean(candidate, best)
    vs_best_paired = paired_improvement(candidate, best)
    high = high_class_check(candidate, best)
    checks = [
        {"check": "vs_best_baseline", "passed": vs_best >= -REWARD_MARGIN,
         "reason": f"reward {candidate.reward.mean():.2f} vs the best tuned rule, {best_name} "
                   f"{tuned[best_name]}, {best.reward.mean():.2f} ({vs_best:+.2%}; at least "
                   f"{-REWARD_MARGIN:+.0%} needed; paired per episode {vs_best_paired['mean']:+.2%}, "
                   f"95% CI {_percent(vs_best_paired['ci95'])})"},
        {"check": "high_class_sla", "passed": high["passed"],
         "reason": f"{judged.config.class_names[0]}-class SLA violations {high['candidate']:.4%} vs "
                   f"{best_name} {high['baseline']:.4%} (upper 95% bound {high['baseline_ci95_high']:.4%})"},
    ]
    with tempfile.TemporaryDirectory(prefix="pmx-rl-champion-") as folder:  # a downloaded champion
        champion_path, champion_version = _champion(champion_checkpoint, use_registry, Path(folder))
        champion_policy = PPOPolicy.from_checkpoint(champion_path) if champion_path is not None else None
    result: dict[str, Any] = {
        "reward": float(candidate.reward.mean()),
        "best_baseline": best_name, "best_baseline_params": tuned[best_name],
        "best_baseline_reward": float(best.reward.mean()),
        "improvement_vs_best_baseline": vs_best,
        "improvement_vs_best_baseline_paired": vs_best_paired,
        "high_class_sla_violation_rate": high["candidate"],
        "best_baseline_high_class_sla_violation_rate": high["baseline"],
        "best_baseline_high_class_sla_violation_rate_ci95_high": high["baseline_ci95_high"],
        "hpa_reward": float(hpa.reward.mean()),
        "improvement_vs_hpa": paired_improvement(candidate, hpa),
        "baseline_rewards": {n: float(e.reward.mean()) for n, e in baselines.items()},
        "champion_version": champion_version,
    }
    if champion_policy is not None:
        champion = judged.run(champion_policy)
        vs_champion = paired_improvement(candidate, champion)
        result |= {"champion_reward": float(champion.reward.mean()),
                   "improvement_vs_champion": vs_champion}
        checks.append({"check": "vs_champion", "passed": vs_champion["mean"] > 0,
                       "reason": f"reward {candidate.reward.mean():.2f} vs champion "
                                 f"{champion.reward.mean():.2f} (paired improvement "
                                 f"{vs_champion['mean']:+.2%})"})
    else:
        checks.append({"check": "vs_champion", "passed": True,
                       "reason": "no champion yet: nothing to compare against"})
    passed = all(c["passed"] for c in checks)
    result |= {"passed": passed, "episodes": episodes, "traffic": judged.traffic.name, "checks": checks,
               "reasons": [c["reason"] for c in checks if not c["passed"]] or
                          [c["reason"] for c in checks]}
    from ml.rl.tracking import record_gate

    record_gate(checkpoint, result, version=version)
    return {"passed": passed, **{k: v for k, v in result.items() if k != "passed"}}


def _percent(interval: list[float | None]) -> str:
    low, high = interval
    return "n/a" if low is None or high is None else f"{low:+.2%} .. {high:+.2%}"


def _champion(path: Path | None, use_registry: bool, folder: Path) -> tuple[Path | None, str | None]:
    if path is not None:
        return path, str(path)
    if not use_registry:
        return None, None
    from ml.rl.tracking import champion_checkpoint

    found = champion_checkpoint(folder)
    return found if found is not None else (None, None)

