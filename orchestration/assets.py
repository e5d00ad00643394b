"""The asset graph: data -> candidates -> evaluation -> champions.

::

    queue_metrics -+-> predictor_candidate --[canary_gate]--> predictor_champion
                   +-> rl_agent_candidate -> rl_agent_evaluation --[canary_gate]--> rl_agent_champion

Every asset calls the code the CLI calls (``ml/predictor``, ``ml/rl``, ``ml/registry.py``), so a
Dagster run and ``pmx train_predictor --mlflow`` / ``pmx models promote`` are the same thing. The
values passed between assets are small dicts of paths and registry versions (Dagster's IO manager
keeps them, so ``canary_gate_job`` and ``promote_job`` pick up the candidates of an earlier run);
the models themselves live in the data home and in MLflow. Metrics go into each materialization's
metadata, which the Dagster UI plots over time.

pandas and the simulator (``ml.sim``) are imported where they are used, as the trainers are: every
Dagster process loads this module (the code server, the daemon, each run), most never train.
"""

import math
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from client.publish import ControlPlaneError
from ml.registry import CONFIG_KEYS
from orchestration import sources
from orchestration.resources import (
    ControlPlaneResource,
    MLflowResource,
    RayResource,
    SettingsResource,
    TrainingBudget,
)
from prioritymax.files import atomic_path
from prioritymax.settings import Settings

#: The latest share of rows (predictor) or of the trace (RL) that training never sees and the gates
#: judge on; the same share ``train_rl`` holds out.
HOLDOUT_FRACTION = 0.2
#: Candidate folders kept under ``models/candidates/`` (one per run; older ones live on in MLflow).
KEEP_CANDIDATE_RUNS = 5
PREDICTOR, RL_AGENT = "predictor", "rl_agent"
ACTOR = "dagster"


def numbers(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of ``values`` as floats (metadata the UI can plot)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def candidate_dir(settings: Settings, run_id: str) -> Path:
    """This run's folder under ``models/candidates/``; the oldest beyond the last few are removed."""
    root = settings.models_dir / "candidates"
    folder = root / run_id
    folder.mkdir(parents=True, exist_ok=True)
    others = sorted((p for p in root.iterdir() if p.is_dir() and p != folder),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP_CANDIDATE_RUNS - 1:]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


# ------------------------------------------------------------------------------------------ data
class QueueMetricsConfig(dg.Config):
    source: sources.Source = Field(
        "auto", description="auto: the trace files landed in <home>/data/traces/, else the default trace; "
                            "trace_days; default (PRIORITYMAX_TRACE, else NASA); synthetic")
    synthetic_days: int = Field(28, ge=1, description="days of the synthetic profile")
    seed: int = Field(0, description="seed of the synthetic profile")


@dg.asset(group_name="data", kinds={"csv"})
def queue_metrics(
    context: dg.AssetExecutionContext, config: QueueMetricsConfig, settings: SettingsResource
) -> dg.Output[dict]:
    """Replay the traffic (trace files landed in ``data/traces/``, else PRIORITYMAX_TRACE or the
    NASA trace, or the synthetic profile) through the simulator under the HPA rule and write
    ``data/<source>/queue_metrics.csv`` in the data home: the predictor's data, and the trace the
    RL agent trains on."""
    from ml.sim.config import SimConfig
    from ml.sim.dataset import TARGET, build_queue_metrics, dataset_path, write_queue_metrics
    from ml.sim.traffic import load_trace

    home = settings.get()
    traffic = sources.resolve(config.source, home, synthetic_days=config.synthetic_days, seed=config.seed)
    sim = SimConfig()
    series = load_trace(traffic.trace, step_seconds=sim.step_seconds)
    frame = build_queue_metrics(series.scaled_to(sim.mean_arrival_rate), config=sim)
    path = write_queue_metrics(frame, dataset_path(home.data_dir, traffic.name))
    context.log.info("wrote %d rows of %s to %s", len(frame), traffic.trace, path)
    value = {"dataset": str(path), "trace": str(traffic.trace), "source": traffic.name}
    return dg.Output(value, metadata={
        "dataset": dg.MetadataValue.path(str(path)),
        "trace": dg.MetadataValue.path(str(traffic.trace)),
        "source": traffic.name,
        "trace_files": len(traffic.files),
        "rows": len(frame),
        "segments": series.num_segments,
        "start": str(frame["timestamp"].iloc[0]),
        "end": str(frame["timestamp"].iloc[-1]),
        "mean_queue_len": float(frame["queue_len"].mean()),
        f"mean_{TARGET}": float(frame[TARGET].mean()),
        "mean_active_workers": float(frame["active_workers"].mean()),
    })


# ------------------------------------------------------------------------------------ predictor
def split_for_gate(dataset: Path, folder: Path, max_rows: int) -> tuple[Path, Path, int]:
    """The latest ``max_rows`` rows (0: all), cut in time: training rows, and the latest
    :data:`HOLDOUT_FRACTION` for the canary gate. Returns both paths and the row count used."""
    import pandas as pd

    frame = pd.read_csv(dataset)
    if max_rows:
        frame = frame.iloc[-max_rows:]
    cut = int(round(len(frame) * (1 - HOLDOUT_FRACTION)))
    paths = folder / "predictor_train.csv", folder / "predictor_gate.csv"
    for path, part in zip(paths, (frame.iloc[:cut], frame.iloc[cut:]), strict=True):
        with atomic_path(path) as partial:
            part.to_csv(partial, index=False)
    return paths[0], paths[1], len(frame)


@dg.asset(group_name=PREDICTOR, kinds={"mlflow"})
def predictor_candidate(
    context: dg.AssetExecutionContext,
    queue_metrics: dict,
    budget: TrainingBudget,
    mlflow: MLflowResource,
    settings: SettingsResource,
) -> dg.Output[dict]:
    """Train the load forecaster (``train_predictor``: arrivals per step, 1, 5 and 15 steps ahead,
    with p90 intervals) on all but the latest rows of
    queue_metrics, log the run to MLflow and register it as the ``predictor`` challenger."""
    from ml.predictor.tracking import flat_metrics
    from ml.predictor.train import train_predictor
    from ml.sim.dataset import LOAD_TARGET

    folder = candidate_dir(settings.get(), context.run.run_id)
    train_csv, gate_csv, rows = split_for_gate(Path(queue_metrics["dataset"]), folder,
                                               budget.predictor_max_rows)
    _, result = train_predictor(train_csv, LOAD_TARGET, folder / f"predictor_{budget.predictor_kind}.pkl",
                                kind=budget.predictor_kind, seed=budget.seed, progress=False,
                                mlflow=True)
    version = result["mlflow"]["model_version"]
    context.log.info("predictor version %s: holdout rmse %.4f", version, result["holdout"]["rmse"])
    value = {"model": PREDICTOR, "version": version, "checkpoint": result["ckpt"],
             "holdout": str(gate_csv), "mlflow_run_id": result["mlflow"]["run_id"]}
    return dg.Output(value, metadata={
        "version": int(version),
        **flat_metrics(result),
        "kind": budget.predictor_kind,
        "rows_used": rows,
        **{f"rows_{part}": n for part, n in result["rows"].items()},
        "best_iteration": result["best_iteration"] or 0,
        "train_seconds": float(result["seconds"]),
        "checkpoint": dg.MetadataValue.path(result["ckpt"]),
        "gate_holdout": dg.MetadataValue.path(str(gate_csv)),
        "mlflow_run_id": result["mlflow"]["run_id"],
        "tracking_uri": mlflow.uri,
    })


# -------------------------------------------------------------------------------------- rl agent
def candidate_trace(trace: Path, folder: Path) -> Path:
    """A copy of ``trace`` in the candidate's folder (same suffixes, so a ``.gz`` stays readable)."""
    copy = folder / ("rl_trace" + "".join(trace.suffixes))
    with atomic_path(copy) as partial:
        shutil.copyfile(trace, partial)
    return copy


@dg.asset(group_name=RL_AGENT, kinds={"pytorch", "mlflow"})
def rl_agent_candidate(
    context: dg.AssetExecutionContext,
    queue_metrics: dict,
    budget: TrainingBudget,
    mlflow: MLflowResource,
    ray: RayResource,
    settings: SettingsResource,
) -> dg.Output[dict]:
    """Train the autoscaling policy on the earlier part of queue_metrics' trace (``train_rl``, or
    RLlib with ``rl_engine: rllib``), log it to MLflow and register it as the ``rl_agent``
    challenger. The trace is copied into the candidate's folder first: the checkpoint names the
    trace it was trained on, and the evaluation and the gate read that file again, so it must be
    this run's own (a later run rewrites ``data/<source>/trace.csv``)."""
    folder = candidate_dir(settings.get(), context.run.run_id)
    checkpoint = folder / "rl_agent.pt"
    args = budget.rl_args()
    trace = candidate_trace(Path(queue_metrics["trace"]), folder)
    if budget.rl_engine == "rllib":
        from ml.rl.rllib import rllib_train

        result = rllib_train(args, folder / "rllib", cpus=ray.num_cpus, gpus=ray.num_gpus,
                             export=checkpoint, trace=trace, holdout_fraction=HOLDOUT_FRACTION,
                             fresh=True, mlflow=True, progress=False)
    else:
        from ml.rl.train import train_rl

        result = train_rl(args, checkpoint, trace=trace, holdout_fraction=HOLDOUT_FRACTION, fresh=True,
                          mlflow=True, progress=False)
    version = result["mlflow"]["model_version"]
    context.log.info("rl_agent version %s: eval reward %.2f (HPA %.2f)", version, result["eval_reward"],
                     result["hpa_reward"])
    value = {"model": RL_AGENT, "version": version, "checkpoint": result["checkpoint"],
             "mlflow_run_id": result["mlflow"]["run_id"]}
    return dg.Output(value, metadata={
        "version": int(version),
        **numbers({k: result.get(k) for k in ("eval_reward", "hpa_reward", "epochs", "global_step",
                                               "sps", "episodic_return", "seconds")}),
        "engine": budget.rl_engine,
        "num_envs": args.num_envs,
        "traffic": result["traffic"],
        "checkpoint": dg.MetadataValue.path(result["checkpoint"]),
        "mlflow_run_id": result["mlflow"]["run_id"],
        "tracking_uri": mlflow.uri,
    })


@dg.asset(group_name=RL_AGENT, kinds={"pytorch"})
def rl_agent_evaluation(
    context: dg.AssetExecutionContext, rl_agent_candidate: dict, budget: TrainingBudget
) -> dg.Output[dict]:
    """The candidate and every rule tuned on its training part (HPA, Erlang-C, queue-threshold,
    static, predictive Erlang-C; the budget's ``rl_rules`` if set) over the same held-out episodes
    (``eval_rl``), with the candidate's paired improvement over the best of them and over HPA."""
    from ml.rl.train import eval_rl

    result = eval_rl(Path(rl_agent_candidate["checkpoint"]), budget.eval_episodes, rules=budget.rl_rules)
    policies = result["policies"]
    improvement = result["improvement_vs_hpa"]
    metadata: dict[str, Any] = {f"reward_{name}": summary["reward"]["mean"]
                                for name, summary in policies.items()}
    metadata |= {f"sla_violation_rate_{name}": summary["sla_violation_rate"]["all"]["mean"]
                 for name, summary in policies.items()}
    metadata |= {f"mean_workers_{name}": summary["mean_workers"]["mean"]
                 for name, summary in policies.items()}
    low, high = improvement["ci95"]
    metadata |= numbers({"improvement_vs_hpa": improvement["mean"], "improvement_vs_hpa_ci95_low": low,
                         "improvement_vs_hpa_ci95_high": high})
    paired = result["improvement_vs_best_baseline_paired"]
    metadata |= {"best_baseline": result["best_baseline"]} | numbers({
        "improvement_vs_best_baseline": result["improvement_vs_best_baseline"],
        "improvement_vs_best_baseline_paired": paired["mean"],
        "improvement_vs_best_baseline_paired_ci95_low": paired["ci95"][0],
        "improvement_vs_best_baseline_paired_ci95_high": paired["ci95"][1]})
    rows = ["| policy | reward | SLA violations | workers |", "| --- | --- | --- | --- |"]
    rows += [f"| {name} | {s['reward']['mean']:.2f} | {s['sla_violation_rate']['all']['mean']:.4%} | "
             f"{s['mean_workers']['mean']:.1f} |" for name, s in policies.items()]
    metadata |= {"episodes": result["episodes"], "traffic": result["traffic"],
                 "policies": dg.MetadataValue.md("\n".join(rows)),
                 "version": int(rl_agent_candidate["version"])}
    context.log.info("rl_agent version %s: %+.2f%% vs HPA over %d episodes", rl_agent_candidate["version"],
                     100 * improvement["mean"], result["episodes"])
    value = {**rl_agent_candidate, "avg_reward": result["avg_reward"],
             "improvement_vs_hpa": improvement["mean"], "tuned": result["tuned"]}
    return dg.Output(value, metadata=metadata)


# ------------------------------------------------------------------------------------ promotion
def crown(
    context: dg.AssetExecutionContext,
    candidate: dict,
    mlflow: MLflowResource,
    control_plane: ControlPlaneResource,
) -> dg.Output[dict]:
    """Make the candidate the champion through ``ml.registry.promote`` (the code path of
    ``pmx models promote``, which refuses a version whose gate did not pass), then publish its
    version on the control plane. A candidate that already is the champion is published again, so
    re-running ``promote_job`` after a failed publish is safe."""
    from ml.registry import RegistryError

    model, version = candidate["model"], str(candidate["version"])
    previous = mlflow.champion_version(model)
    if previous == version:
        context.log.info("%s version %s already is the champion; publishing it again", model, version)
        outcome, metrics = "already the champion", mlflow.run_metrics(model, version)
    else:
        try:
            record = mlflow.promote(model, version, actor=ACTOR, reason=f"dagster run {context.run.run_id}")
        except RegistryError as error:
            raise dg.Failure(description=f"{model} version {version} not promoted: {error}",
                             metadata={"model": model, "version": int(version),
                                       "champion_version": previous or "none"}) from None
        previous, metrics = record["previous_champion"], record["metrics"]
        outcome = f"promoted (was {previous or 'none'})"
    key = CONFIG_KEYS[model]
    try:
        published = control_plane.publish(key, int(version), comment=f"{model} version {version} "
                                           f"promoted by dagster run {context.run.run_id}")
    except ControlPlaneError as error:
        raise dg.Failure(description=f"{model} version {version} is the champion in MLflow, but {error}; "
                                     "run promote_job again once the control plane takes the write",
                         metadata={"model": model, "version": int(version)}) from None
    if not published.published:
        context.log.warning("%s version %s: %s", model, version, published.status)
    value = {"model": model, "version": version, "previous_champion": previous,
             "published": published.published}
    return dg.Output(value, metadata={
        "version": int(version),
        "previous_champion": previous or "none",
        "promotion": outcome,
        **numbers(metrics),
        "control_plane": published.status,
        "published": published.published,
        "config_key": key,
    })


@dg.asset(group_name=PREDICTOR, kinds={"mlflow"})
def predictor_champion(
    context: dg.AssetExecutionContext,
    predictor_candidate: dict,
    mlflow: MLflowResource,
    control_plane: ControlPlaneResource,
) -> dg.Output[dict]:
    """The registry's ``champion`` predictor: the candidate, once its canary gate passed; workers
    learn the new version from ``predictor.model_version`` on the control plane."""
    return crown(context, predictor_candidate, mlflow, control_plane)


@dg.asset(group_name=RL_AGENT, kinds={"mlflow"})
def rl_agent_champion(
    context: dg.AssetExecutionContext,
    rl_agent_evaluation: dict,
    mlflow: MLflowResource,
    control_plane: ControlPlaneResource,
) -> dg.Output[dict]:
    """The registry's ``champion`` autoscaling policy: the candidate, once it beat the HPA rule
    and the champion; the autoscaler learns it from ``autoscaler.policy_version``."""
    return crown(context, rl_agent_evaluation, mlflow, control_plane)


ASSETS = [queue_metrics, predictor_candidate, predictor_champion, rl_agent_candidate, rl_agent_evaluation,
          rl_agent_champion]
