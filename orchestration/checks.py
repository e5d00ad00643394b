"""Blocking asset checks. A check that fails stops every asset downstream of its asset in the run:
a bad dataset trains nothing, and a candidate that fails its canary gate is never promoted. The
gates call the CLI's gates (``canary_predictor``, ``canary_rl``), which also record the result on
the registered version as ``gate.*`` tags - what ``ml.registry.promote`` insists on, so a later
``promote_job`` refuses a failed candidate too. Each result's metadata puts the candidate's
metrics beside the champion's and the thresholds.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from orchestration.assets import numbers, predictor_candidate, queue_metrics, rl_agent_evaluation
from orchestration.resources import MLflowResource, TrainingBudget

if TYPE_CHECKING:
    import pandas as pd

    from ml.sim.config import SimConfig


def _already_champion(candidate: dict, mlflow: MLflowResource) -> dg.AssetCheckResult | None:
    """A candidate that already is the champion (``canary_gate_job`` after a promotion) is not
    gated against itself: that would only overwrite its recorded gate."""
    if mlflow.champion_version(candidate["model"]) != str(candidate["version"]):
        return None
    return dg.AssetCheckResult(
        passed=True, description=f"{candidate['model']} version {candidate['version']} is the champion "
                                 "already: nothing to gate it against",
        metadata={"version": int(candidate["version"]), "champion_version": str(candidate["version"])})


def _checks_table(checks: list[dict[str, Any]]) -> dg.MetadataValue:
    rows = ["| check | passed | reason |", "| --- | --- | --- |"]
    rows += [f"| {c['check']} | {'yes' if c['passed'] else 'NO'} | {c['reason']} |" for c in checks]
    return dg.MetadataValue.md("\n".join(rows))


# --------------------------------------------------------------------------------- data quality
class DataQualityConfig(dg.Config):
    max_gap_hours: float = Field(
        96.0, gt=0, description="the longest allowed gap between consecutive rows (the NASA trace "
                                "has an 82.5-hour outage, 1-3 August 1995)")
    min_rows: int = Field(1440, ge=1, description="at least this many rows (a day of minutes)")


def required_columns(config: "SimConfig") -> list[str]:
    """What the predictor and the gates read from queue_metrics."""
    from ml.sim.dataset import TARGET

    per_class = [f"{kind}_{name}" for kind in ("arrivals", "queue") for name in config.class_names]
    return ["timestamp", "segment", "arrival_rate", *per_class, "queue_len", "active_workers",
            "utilization", TARGET]


def count_columns(config: "SimConfig") -> list[str]:
    """Columns that count tasks or workers: never negative."""
    from ml.sim.dataset import TARGET

    per_class = [f"{kind}_{name}" for kind in ("arrivals", "queue", "violations")
                 for name in config.class_names]
    return [*per_class, "queue_len", "active_workers", "warming_workers", TARGET]


def quality_report(frame: "pd.DataFrame", *, max_gap_hours: float, min_rows: int,
                   config: "SimConfig | None" = None) -> dict[str, Any]:
    """Schema, negative counts, missing values, time order and gaps of a queue_metrics frame;
    ``problems`` lists what fails (empty: passed)."""
    import numpy as np
    import pandas as pd

    from ml.sim.config import SimConfig

    config = config or SimConfig()
    problems: list[str] = []
    missing = [c for c in required_columns(config) if c not in frame.columns]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    numeric = [c for c in required_columns(config) + count_columns(config)
               if c in frame.columns and c != "timestamp"]
    not_numeric = sorted({c for c in numeric if not pd.api.types.is_numeric_dtype(frame[c])})
    if not_numeric:
        problems.append(f"not numeric: {', '.join(not_numeric)}")
    empty = {c: int(n) for c, n in frame[numeric].isna().sum().items() if n}
    if empty:
        problems.append(f"missing values: {empty}")
    negative = {c: int((pd.to_numeric(frame[c], errors="coerce") < 0).sum())
                for c in count_columns(config) if c in frame.columns}
    negative = {c: n for c, n in negative.items() if n}
    if negative:
        problems.append(f"negative counts: {negative}")
    if len(frame) < min_rows:
        problems.append(f"{len(frame)} rows, fewer than {min_rows}")

    report: dict[str, Any] = {"rows": len(frame), "missing_columns": missing, "negative_counts": negative,
                              "missing_values": empty, "max_gap_hours": 0.0, "gaps": 0, "days": {}}
    if "timestamp" in frame.columns and len(frame):
        stamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601", errors="coerce")
        if stamps.isna().any():
            problems.append(f"{int(stamps.isna().sum())} timestamps that are not timestamps")
        spacing = stamps.diff().dt.total_seconds().to_numpy()[1:]
        if (spacing <= 0).any():
            problems.append(f"{int((spacing <= 0).sum())} rows out of time order or duplicated")
        gaps = np.flatnonzero(spacing > config.step_seconds)
        report["gaps"] = len(gaps)
        if len(gaps):
            worst = int(gaps[spacing[gaps].argmax()])
            report["max_gap_hours"] = float(spacing[worst] / 3600)
            if report["max_gap_hours"] > max_gap_hours:
                problems.append(f"a gap of {report['max_gap_hours']:.1f} h after {stamps.iloc[worst]} "
                                f"exceeds {max_gap_hours:g} h")
        report["days"] = {str(day): int(n) for day, n in stamps.dt.date.value_counts().sort_index().items()}
    report["problems"] = problems
    return report


@dg.asset_check(asset=queue_metrics, name="data_quality", blocking=True)
def queue_metrics_data_quality(queue_metrics: dict, config: DataQualityConfig) -> dg.AssetCheckResult:
    """Schema, no negative counts or missing values, time order, and gaps within a bound."""
    import pandas as pd

    from ml.sim.config import SimConfig

    report = quality_report(pd.read_csv(queue_metrics["dataset"]), max_gap_hours=config.max_gap_hours,
                            min_rows=config.min_rows)
    full_day = 86_400 // SimConfig().step_seconds
    per_day = ["| day | rows | of a full day |", "| --- | --- | --- |"]
    per_day += [f"| {day} | {n} | {n / full_day:.0%} |" for day, n in report["days"].items()]
    return dg.AssetCheckResult(
        passed=not report["problems"],
        description="; ".join(report["problems"]) or "schema, counts, order and gaps look right",
        metadata={
            "rows": report["rows"],
            "days": len(report["days"]),
            "gaps": report["gaps"],
            "max_gap_hours": report["max_gap_hours"],
            "max_gap_hours_allowed": config.max_gap_hours,
            "min_rows": config.min_rows,
            "missing_columns": report["missing_columns"],
            "negative_counts": report["negative_counts"],
            "missing_values": report["missing_values"],
            "problems": report["problems"],
            "rows_per_day": dg.MetadataValue.md("\n".join(per_day)),
        },
    )


# ------------------------------------------------------------------------------ predictor gate
class PredictorGateConfig(dg.Config):
    threshold: float | None = Field(
        None, description="pass only if the holdout RMSE is below this [unset: the better baseline's]")
    margin: float = Field(0.02, ge=0, description="how much worse than the champion a candidate may "
                          "be (the upper end of the bootstrap RMSE-ratio interval <= 1 + margin)")
    bootstrap_samples: int = Field(1000, ge=100, description="moving-block bootstrap resamples")


@dg.asset_check(asset=predictor_candidate, name="canary_gate", blocking=True)
def predictor_canary_gate(
    predictor_candidate: dict, config: PredictorGateConfig, mlflow: MLflowResource
) -> dg.AssetCheckResult:
    """``canary_predictor`` on the held-out latest rows: under the threshold AND not worse than
    the registry's champion beyond the margin."""
    from ml.predictor.canary import canary_predictor

    if (unchanged := _already_champion(predictor_candidate, mlflow)) is not None:
        return unchanged
    result = canary_predictor(predictor_candidate["checkpoint"], predictor_candidate["holdout"],
                              config.threshold, margin=config.margin,
                              bootstrap_samples=config.bootstrap_samples)
    low, high = result.get("ratio_ci95") or (None, None)
    metadata: dict[str, Any] = {
        "version": int(predictor_candidate["version"]),
        "candidate_rmse": result["rmse"],
        "threshold": result["threshold"],
        "threshold_source": "config" if config.threshold is not None else "the better baseline's RMSE",
        "champion_version": result.get("champion_version") or "none",
        **numbers({"champion_rmse": result.get("champion_rmse"), "rmse_ratio": result.get("ratio"),
                   "rmse_ratio_ci95_low": low, "rmse_ratio_ci95_high": high}),
        "max_rmse_ratio": 1 + config.margin,
        **numbers(result["baselines"], prefix="rmse_"),
        "rows": result["rows"],
        "checks": _checks_table(result["checks"]),
    }
    return dg.AssetCheckResult(passed=result["passed"], metadata=metadata,
                               description="; ".join(result["reasons"]))


# ------------------------------------------------------------------------------------- RL gate
@dg.asset_check(asset=rl_agent_evaluation, name="canary_gate", blocking=True)
def rl_agent_canary_gate(
    rl_agent_evaluation: dict, budget: TrainingBudget, mlflow: MLflowResource
) -> dg.AssetCheckResult:
    """``canary_rl``: on the candidate's own held-out episodes, the candidate's mean reward must be
    within 2% of the best rule tuned on its training part or better, its high-class SLA violation
    rate within that rule's upper 95% bound, and it must beat the registry's champion."""
    from ml.rl.train import REWARD_MARGIN, canary_rl

    if (unchanged := _already_champion(rl_agent_evaluation, mlflow)) is not None:
        return unchanged
    result = canary_rl(Path(rl_agent_evaluation["checkpoint"]), budget.eval_episodes,
                       tuned=rl_agent_evaluation.get("tuned"), rules=budget.rl_rules)
    metadata: dict[str, Any] = {
        "version": int(rl_agent_evaluation["version"]),
        "candidate_reward": result["reward"],
        "best_baseline": result["best_baseline"],
        "best_baseline_params": dg.MetadataValue.json(result["best_baseline_params"]),
        "best_baseline_reward": result["best_baseline_reward"],
        "candidate_high_class_sla_violation_rate": result["high_class_sla_violation_rate"],
        "best_baseline_high_class_sla_violation_rate": result["best_baseline_high_class_sla_violation_rate"],
        "best_baseline_high_class_sla_violation_rate_ci95_high":
            result["best_baseline_high_class_sla_violation_rate_ci95_high"],
        "baseline_rewards": dg.MetadataValue.json(result["baseline_rewards"]),
        "hpa_reward": result["hpa_reward"],
        "champion_version": result.get("champion_version") or "none",
        "min_improvement_vs_best_baseline": -REWARD_MARGIN,
        "episodes": result["episodes"],
        "checks": _checks_table(result["checks"]),
    }
    metadata |= numbers({"champion_reward": result.get("champion_reward")})
    paired = result["improvement_vs_best_baseline_paired"]
    metadata |= numbers({"improvement_vs_best_baseline": result["improvement_vs_best_baseline"],
                         "improvement_vs_best_baseline_paired": paired["mean"],
                         "improvement_vs_best_baseline_paired_ci95_low": paired["ci95"][0],
                         "improvement_vs_best_baseline_paired_ci95_high": paired["ci95"][1]})
    for against in ("hpa", "champion"):
        improvement = result.get(f"improvement_vs_{against}")
        if improvement:
            low, high = improvement["ci95"]
            metadata |= numbers({f"improvement_vs_{against}": improvement["mean"],
                                 f"improvement_vs_{against}_ci95_low": low,
                                 f"improvement_vs_{against}_ci95_high": high})
    return dg.AssetCheckResult(passed=result["passed"], metadata=metadata,
                               description="; ".join(result["reasons"]))


CHECKS = [queue_metrics_data_quality, predictor_canary_gate, rl_agent_canary_gate]
