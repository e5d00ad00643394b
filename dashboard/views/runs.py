"""Runs: MLflow and Dagster runs, overlaid metric curves, a parameter diff of the chosen runs."""

import plotly.express as px
import streamlit as st

from dashboard.data import runs
from dashboard.ui import attempt, rows

st.title("Runs")

found = attempt(runs.mlflow_runs)
if found is not None and found.empty:
    st.info("No MLflow runs yet: train with `--mlflow` (`pmx train_rl --mlflow`, `pmx train_predictor "
            "--mlflow`) or run the pipeline (`pmx up`).")
elif found is not None:
    st.subheader("MLflow runs")
    left, middle, right = st.columns(3)
    experiments = left.multiselect("Experiment", sorted(found["experiment"].unique()),
                                   default=sorted(found["experiment"].unique()))
    statuses = middle.multiselect("Status", sorted(found["status"].unique()),
                                  default=sorted(found["status"].unique()))
    keys = runs.metric_keys(found)
    order = right.selectbox("Sort by", ["start_time", *[f"metrics.{k}" for k in keys]])
    shown = found[found["experiment"].isin(experiments) & found["status"].isin(statuses)]
    shown = shown.sort_values(order, ascending=order != "start_time", na_position="last")
    columns = ["run_id", "experiment", "run_name", "status", "start_time",
               *[c for c in shown.columns if c.startswith("metrics.")]]
    st.dataframe(shown[columns], hide_index=True, width="stretch")
    st.dataframe(runs.summary(found), hide_index=True)

    st.subheader("Metric curves")
    labels = {row.run_id: f"{row.run_name or row.run_id[:8]} ({row.experiment}, {row.run_id[:8]})"
              for row in shown.itertuples()}
    chosen = st.multiselect("Runs", list(labels), default=list(labels)[:3], format_func=labels.get)
    controls = st.columns(4)
    default_metric = keys.index("eval_reward") if "eval_reward" in keys else 0
    metric = controls[0].selectbox("Metric", keys, index=default_metric)
    weight = controls[1].slider("Smoothing", 0.0, 0.99, 0.0, 0.01)
    axis = controls[2].radio("x-axis", ["step", "time"], horizontal=True)
    log_scale = controls[3].checkbox("Log scale")
    if chosen and metric:
        history = runs.smooth(runs.metric_history(tuple(chosen), metric), weight)
        if history.empty:
            st.caption(f"None of the chosen runs logged {metric}.")
        else:
            history = history.assign(run=history["run_id"].map(labels),
                                     time=history["timestamp"].astype("datetime64[s]"))
            figure = px.line(history, x="step" if axis == "step" else "time", y="smoothed", color="run",
                             markers=len(history) < 50, log_y=log_scale, labels={"smoothed": metric})
            st.plotly_chart(figure, width="stretch")

    st.subheader("Compare parameters")
    if len(chosen) >= 2:
        diff = runs.param_diff(found, chosen)
        if diff.empty:
            st.caption("The chosen runs have the same parameters.")
        else:
            st.caption("Only the parameters that differ.")
            st.dataframe(diff.rename(columns=labels), width="stretch")
    else:
        st.caption("Choose two runs or more above to see the parameters that differ.")

st.subheader("Dagster runs")
dagster = rows(runs.dagster_runs, "No Dagster runs yet.")
if dagster is not None:
    jobs = st.multiselect("Job", sorted(dagster["job"].unique()))
    st.dataframe(dagster[dagster["job"].isin(jobs)] if jobs else dagster, hide_index=True, width="stretch")
