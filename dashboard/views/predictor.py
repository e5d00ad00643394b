"""Predictor: the load forecast at each horizon, with its p50..p90 band, against the actual load on
a dataset's holdout, and against the baselines."""

from datetime import timedelta

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard.data import predictor
from dashboard.ui import key_values

LABELS = {"model": "model", "persistence": "persistence (last value)",
          "seasonal_naive": "seasonal naive (a day before)"}
#: plotly's first three colors, one per method, the same on both error charts.
METHOD_COLORS = {"model": "#636efa", "persistence": "#ef553b", "seasonal_naive": "#00cc96"}
BAND = "rgba(31, 119, 180, 0.2)"
MEAN = "rgb(31, 119, 180)"


def duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    if seconds < 86_400:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 86_400:g} d"


def controls(choices: list[predictor.ModelChoice],
             found: list[predictor.Dataset]) -> tuple[predictor.ModelChoice, dict, str] | None:
    labels = {c.label: c for c in choices}
    left, right = st.columns(2)
    choice = labels[left.selectbox("Predictor", list(labels))]
    try:
        details = predictor.model_details(choice)
    except predictor.HoldoutError as error:
        st.error(f"{choice.label} cannot be read: {error}")
        return None
    options = predictor.dataset_choices(details["data"], found, details["data_fingerprint"])
    paths = {d.label: d.path for d in options}
    dataset = right.selectbox("Dataset", list(paths), disabled=not paths, key=f"dataset::{choice.label}",
                              help="The data the model was trained on first (by its recorded path, "
                                   "else by its fingerprint), then `data/<source>/queue_metrics.csv` "
                                   "in the data home")
    rmse = details["holdout_rmse"]
    registered = f"; holdout RMSE when trained {rmse:.3f} (first horizon)" if rmse is not None else ""
    horizons = ", ".join(str(k) for k in details["horizons"])
    st.caption(f"**{choice.label}**: {details['kind']} forecasting `{details['target']}` "
               f"{horizons} step(s) ahead ({details['features']} features), trained "
               f"{details['created_at'] or '(date unknown)'} on `{details['data'] or '(not recorded)'}`"
               f"{registered}.")
    for name, window in (("Training", details["training_window"]),
                         ("Holdout", details["holdout_window"])):
        if window:
            st.caption(f"{name} window: {window['start']} to {window['end']} ({window['rows']:,} rows).")
    if details["data"] and not any(d.trained_on for d in options):
        st.info(f"The data this model was trained on, `{details['data']}`, is not here; it is shown "
                "on the data home's dataset instead.")
    if not paths:
        st.info(f"No dataset to show it on: no queue_metrics dataset in the data home's `data/` "
                f"yet. {predictor.HOW_TO_BUILD}")
        return None
    return choice, details, paths[dataset]


def horizon_table(held: predictor.Holdout, details: dict) -> None:
    st.subheader("Per horizon")
    table = predictor.horizon_metrics(held.frame, details["by_horizon"])
    number = st.column_config.NumberColumn
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "horizon": number("horizon (steps)"),
        "rmse": number("model RMSE", format="%.3f"), "mae": number("model MAE", format="%.3f"),
        "p90_coverage": number("p90 coverage", format="percent",
                               help="Share of actual values at or under the p90 forecast (aim: 90%)"),
        "persistence_rmse": number("persistence RMSE", format="%.3f"),
        "seasonal_naive_rmse": number("seasonal naive RMSE", format="%.3f"),
        "skill_vs_persistence": number("skill vs persistence", format="percent"),
        "trained_rmse": number("RMSE when trained", format="%.3f"),
        "trained_p90_coverage": number("p90 coverage when trained", format="percent"),
    })
    st.caption("On the holdout's rows. Skill = 1 − RMSE / persistence's RMSE (above zero: better "
               "than repeating the last value). \"When trained\": what the model's metadata "
               "recorded on its own holdout.")


def horizon_scores(frame: pd.DataFrame, methods: tuple[str, ...]) -> None:
    table = predictor.metrics(frame)
    by_method = table.set_index("method")
    values = {f"{LABELS[m]} RMSE": f"{by_method.loc[m, 'rmse']:.3f}" for m in by_method.index}
    coverage = (frame["actual"] <= frame["p90"]).mean() if frame["p90"].notna().any() else None
    values["p90 coverage"] = None if coverage is None else f"{coverage:.1%}"
    key_values(values)
    with st.expander("Every forecast at this horizon"):
        st.dataframe(table, hide_index=True, width="stretch")
        st.caption("Error = forecast − actual: a positive bias forecasts too high.")
    if "seasonal_naive" not in methods:
        st.caption("Less than a day of history before these rows: no seasonal-naive baseline.")


def forecast_chart(frame: pd.DataFrame, methods: tuple[str, ...], horizon: int, target: str) -> None:
    st.subheader("Forecast vs actual")
    stamps = frame["ts"].dt.tz_convert(None)
    first, last = stamps.min().to_pydatetime(), stamps.max().to_pydatetime()
    start, end = (t.tz_convert(None).to_pydatetime() for t in predictor.recent(frame))
    left, right = st.columns([3, 2])
    if first < last:
        start, end = left.slider("Window (UTC, the time forecast for)", min_value=first,
                                 max_value=last, value=(start, end), step=timedelta(minutes=1),
                                 format="YYYY-MM-DD HH:mm", key=f"window-{horizon}")
    baselines = [m for m in methods if m != "model"]
    shown = right.multiselect("Baselines", baselines, default=[], format_func=LABELS.get)
    window = frame[(stamps >= start) & (stamps <= end)]
    figure = go.Figure()
    if window["p90"].notna().any():
        figure.add_trace(go.Scatter(x=window["ts"], y=window["p50"], name="p50", mode="lines",
                                    line={"width": 1, "color": MEAN, "dash": "dot"}))
        figure.add_trace(go.Scatter(x=window["ts"], y=window["p90"], name="p90 (p50–p90 band)",
                                    mode="lines", fill="tonexty", fillcolor=BAND,
                                    line={"width": 1, "color": MEAN}))
    figure.add_trace(go.Scatter(x=window["ts"], y=window["model"], name="forecast (mean)",
                                mode="lines", line={"width": 2, "color": MEAN}))
    for method in shown:
        figure.add_trace(go.Scatter(x=window["ts"], y=window[method], name=LABELS[method],
                                    mode="lines", line={"width": 1, "dash": "dash"}))
    figure.add_trace(go.Scatter(x=window["ts"], y=window["actual"], name="actual", mode="lines",
                                line={"width": 2, "color": "black"}))
    figure.update_layout(xaxis_title="time forecast for (UTC)", yaxis_title=target,
                         hovermode="x unified", legend={"orientation": "h", "y": -0.2})
    st.plotly_chart(figure, width="stretch")
    covered = (window["actual"] <= window["p90"]).mean() if window["p90"].notna().any() else None
    coverage = "" if covered is None or window.empty else f"; p90 covers {covered:.0%} of them"
    st.caption(f"{len(window):,} of the holdout's {len(frame):,} forecasts {horizon} step(s) "
               f"ahead, each at the time it forecasts{coverage}.")


def error_charts(frame: pd.DataFrame, target: str) -> None:
    """The errors by decile of the load and their spread. Drawn with plotly's graph objects, a trace
    per method: plotly express would regroup the frame on every rerun (a few hundred ms each)."""
    st.subheader("Errors by load")
    by_load = predictor.error_by_load(frame)
    figure = go.Figure()
    for method in predictor.METHODS:
        rows = by_load[by_load["method"] == method]
        if not rows.empty:
            figure.add_trace(go.Bar(x=rows["load"], y=rows["mae"], name=method,
                                    marker={"color": METHOD_COLORS[method]},
                                    customdata=rows[["relative_mae", "rows"]].to_numpy(),
                                    hovertemplate="%{x}<br>mean absolute error %{y:.4g}<br>relative to "
                                                  "load %{customdata[0]:.1%}<br>%{customdata[1]} rows"))
    figure.update_layout(barmode="group", xaxis_title=f"decile of actual {target} (range)",
                         yaxis_title="mean absolute error", legend_title_text="method")
    st.plotly_chart(figure, width="stretch")
    st.caption("Mean |forecast − actual| per tenth of the rows, from the quietest (D1) to the "
               "busiest (D10).")
    long = predictor.errors(frame)
    low, high = long["relative_error"].quantile([0.01, 0.99])
    kept = long[long["relative_error"].between(low, high)]
    spread = go.Figure()
    for method in predictor.METHODS:
        values = kept.loc[kept["method"] == method, "relative_error"]
        if not values.empty:
            spread.add_trace(go.Histogram(x=values, name=method, nbinsx=60, histnorm="percent", opacity=0.6,
                                          marker={"color": METHOD_COLORS[method]}))
    spread.update_layout(barmode="overlay", xaxis_title="(forecast − actual) / max(actual, 1)",
                         yaxis_title="percent", legend_title_text="method")
    st.plotly_chart(spread, width="stretch")
    st.caption("Errors relative to the load; the 1% largest misses either way (bursts) are left "
               "out so the axis stays readable.")


st.title("Predictor: load forecast vs actual")
choices, note = predictor.models()
found = predictor.datasets()
if note:
    st.warning(f"**MLflow is unavailable.** {note}; only a local checkpoint can be shown.",
               icon=":material/warning:")
if not choices:
    st.info(f"No predictor yet: no `predictor` champion in the registry and no "
            f"`models/{predictor.CHECKPOINT}` in the data home. {predictor.HOW_TO_TRAIN}")
    if not found:
        st.info(f"No queue_metrics dataset in the data home's `data/` yet. {predictor.HOW_TO_BUILD}")
elif (chosen := controls(choices, found)) is not None:
    choice, details, dataset = chosen
    try:
        held = predictor.holdout(choice, dataset, predictor.dataset_mtime(dataset))
    except predictor.HoldoutError as error:
        st.warning(f"This dataset cannot be used for this predictor: {error}", icon=":material/warning:")
    else:
        origin = {True: "the dataset the model was trained on: these rows were held out of its fitting",
                  False: "another dataset than the one the model was trained on",
                  None: "a dataset the model does not record as its own"}[held.same_data]
        made = held.frame["made_at"]
        st.caption(f"Holdout: the latest {predictor.HOLDOUT_FRACTION:.0%} of {held.rows:,} usable rows "
                   f"(forecasts made {made.min():%Y-%m-%d %H:%M} to {made.max():%Y-%m-%d %H:%M} UTC), "
                   f"of {origin}.")
        horizon_table(held, details)
        horizon = st.radio(
            "Horizon", list(held.horizons), horizontal=True,
            format_func=lambda k: (f"{k} step{'s' if k != 1 else ''} ahead "
                                   f"({duration(held.lead_seconds(k))})"))
        frame = held.at(horizon)
        horizon_scores(frame, held.methods[horizon])
        forecast_chart(frame, held.methods[horizon], horizon, held.target)
        error_charts(frame, held.target)
