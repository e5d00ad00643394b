"""Runs: one experiment's MLflow runs, their learning curves overlaid, a parameter diff of the chosen
runs (all of one experiment, so each parameter means the same thing in every column); the runs per
experiment; the Dagster runs and what launched them."""

import streamlit as st

from dashboard.data import runs
from dashboard.ui import attempt, rows

#: Pixels per table row (Streamlit's default row height) and for the header, to size a table to
#: its rows up to :data:`MAX_TABLE_ROWS`; beyond that it scrolls.
ROW_PX, MAX_TABLE_ROWS = 35, 12


def table_height(count: int) -> int:
    """Tall enough for every row up to :data:`MAX_TABLE_ROWS` (no half-hidden last row)."""
    return ROW_PX * (min(count, MAX_TABLE_ROWS) + 1) + 3


def run_list(shown) -> None:
    """The experiment's runs with the metrics a run is judged on (more on request), one metric a
    column under its own name, so the table fits the page; the run's name stays pinned if a
    wider choice scrolls sideways."""
    keys = runs.metric_keys(shown)
    metrics = st.multiselect("Metric columns", keys, default=runs.summary_columns(keys),
                             key=f"runs_columns::{shown['experiment'].iloc[0]}")
    table = runs.run_table(shown, metrics)
    number = st.column_config.NumberColumn
    st.dataframe(table, hide_index=True, width="stretch", height=table_height(len(table)), column_config={
        "run": st.column_config.TextColumn("run", pinned=True),
        "started": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "seconds": number("seconds", format="%.1f", help="How long the run took"),
        **{key: number(key, format="%.4g") for key in metrics},
    })


def curves(shown, labels: dict[str, str]) -> list[str]:
    """The chosen runs' metric over steps (a learning curve by default); a bar per run for a
    metric logged once per run. Returns the chosen run ids."""
    chosen = st.multiselect("Runs", list(labels), default=list(labels)[:3], format_func=labels.get,
                            key=f"runs_chosen::{shown['experiment'].iloc[0]}")
    keys = runs.metric_keys(shown[shown["run_id"].isin(chosen)])
    if not chosen or not keys:
        st.caption("Choose runs that logged metrics.")
        return chosen
    controls = st.columns(4)
    default = runs.default_metric(tuple(chosen), keys)
    metric = controls[0].selectbox("Metric", keys, index=keys.index(default))
    weight = controls[1].slider("Smoothing", 0.0, 0.99, 0.0, 0.01)
    axis = controls[2].radio("x-axis", ["step", "time"], horizontal=True)
    log_scale = controls[3].checkbox("Log scale")
    history = runs.smooth(runs.metric_history(tuple(chosen), metric), weight)
    if history.empty:
        st.caption(f"None of the chosen runs logged {metric}.")
        return chosen
    import plotly.express as px

    history = history.assign(run=history["run_id"].map(labels),
                             time=history["timestamp"].astype("datetime64[s]"))
    if runs.points(history) > 1:
        figure = px.line(history, x="step" if axis == "step" else "time", y="smoothed", color="run",
                         markers=len(history) < 50, log_y=log_scale, labels={"smoothed": metric})
    else:
        logged = [k for k in runs.LEARNING_CURVES if k in keys]
        st.caption(f"{metric} is logged once per run: one bar each. Learning curves: "
                   f"{', '.join(logged) or 'none logged by these runs'}.")
        figure = px.bar(history, x="run", y="value", color="run", log_y=log_scale,
                        labels={"value": metric})
    st.plotly_chart(figure, width="stretch")
    return chosen


def parameters(shown, chosen: list[str], labels: dict[str, str]) -> None:
    if len(chosen) < 2:
        st.caption("Choose two runs or more above to see the parameters that differ.")
        return
    diff, bare = runs.param_diff(shown, chosen)
    if bare:
        st.caption(f"No parameters recorded by {', '.join(labels[r] for r in bare)} (a registered file, "
                   "not a training run): left out.")
    if diff.empty:
        st.caption("The chosen runs have the same parameters.")
    else:
        st.caption("Only the parameters that differ (— : the run did not record it).")
        st.dataframe(diff.rename(columns=labels), width="stretch", height=table_height(len(diff)))


st.title("Runs")

found = attempt(runs.mlflow_runs)
if found is not None and found.empty:
    st.info("No MLflow runs yet: train with `--mlflow` (`pmx train_rl --mlflow`, `pmx train_predictor "
            "--mlflow`) or run the pipeline (`pmx up`).")
elif found is not None:
    st.subheader("MLflow runs")
    experiments = sorted(found["experiment"].unique())
    left, right = st.columns(2)
    experiment = left.selectbox("Experiment", experiments,
                                index=experiments.index(runs.default_experiment(experiments)),
                                help="Runs are listed, plotted and compared within one experiment")
    own = runs.experiment_runs(found, experiment)
    statuses = right.multiselect("Status", sorted(own["status"].unique()),
                                 default=sorted(own["status"].unique()), key=f"runs_status::{experiment}")
    shown = own[own["status"].isin(statuses)]
    if shown.empty:
        st.caption("No run of this experiment has the chosen statuses.")
    else:
        run_list(shown)
        st.subheader("Metric curves")
        labels = {row.run_id: f"{row.run_name or row.run_id[:8]} ({row.run_id[:8]})"
                  for row in shown.itertuples()}
        chosen = curves(shown, labels)
        st.subheader("Compare parameters")
        parameters(shown, chosen, labels)
    st.caption("Runs per experiment and status")
    st.dataframe(runs.summary(found), hide_index=True)

st.subheader("Dagster runs")
dagster = rows(runs.dagster_runs, "No Dagster runs yet.")
if dagster is not None:
    jobs = st.multiselect("Job", sorted(dagster["job"].unique()))
    st.dataframe(dagster[dagster["job"].isin(jobs)] if jobs else dagster, hide_index=True, width="stretch",
                 column_config={"launched_by": st.column_config.TextColumn("launched by",
                                                                           help=runs.LAUNCHED_BY_HELP)})
