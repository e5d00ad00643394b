"""Predictor: forecasts against the actual queue on a dataset's holdout, and against the baselines."""

from datetime import timedelta

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.data import predictor
from dashboard.ui import key_values

LABELS = {"model": "model", "persistence": "persistence (last value)",
          "seasonal_naive": "seasonal naive (a day before)"}


def controls(choices: list[predictor.ModelChoice],
             found: list[predictor.Dataset]) -> tuple[predictor.ModelChoice, str] | None:
    labels = {c.label: c for c in choices}
    paths = {d.label: d.path for d in found}
    left, right = st.columns(2)
    choice = labels[left.selectbox("Predictor", list(labels))]
    dataset = right.selectbox("Dataset", list(paths),
                              help="`data/<source>/queue_metrics.csv` in the data home")
    try:
        details = predictor.model_details(choice)
    except predictor.HoldoutError as error:
        st.error(f"{choice.label} cannot be read: {error}")
        return None
    rmse = details["holdout_rmse"]
    registered = f"; holdout RMSE when trained {rmse:.3f}" if rmse is not None else ""
    st.caption(f"**{choice.label}**: {details['kind']} forecasting `{details['target']}` "
               f"({details['features']} features), trained {details['created_at'] or '(date unknown)'} "
               f"on `{details['data'] or '(not recorded)'}`{registered}.")
    return choice, paths[dataset]


def scores(held: predictor.Holdout) -> None:
    table = predictor.metrics(held.frame)
    by_method = table.set_index("method")
    values = {f"{LABELS[m]} RMSE": f"{by_method.loc[m, 'rmse']:.3f}" for m in by_method.index}
    skill = by_method.loc["model", "skill_vs_persistence"] if "model" in by_method.index else None
    values["Skill vs persistence"] = None if pd.isna(skill) else f"{skill:+.1%}"
    key_values(values)
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption("Error = forecast − actual: a positive bias forecasts too high. Skill = 1 − RMSE / "
               "persistence's RMSE (above zero: better than repeating the last value).")


def forecast_chart(frame: pd.DataFrame, methods: tuple[str, ...]) -> None:
    st.subheader("Forecast vs actual")
    stamps = frame["ts"].dt.tz_convert(None)
    first, last = stamps.min().to_pydatetime(), stamps.max().to_pydatetime()
    left, right = st.columns([3, 2])
    start, end = left.slider("Window (UTC)", min_value=first, max_value=last,
                             value=(first, min(last, first + timedelta(hours=6))),
                             step=timedelta(minutes=1), format="YYYY-MM-DD HH:mm")
    shown = right.multiselect("Forecasts", list(methods), default=list(methods), format_func=LABELS.get)
    window = frame[(stamps >= start) & (stamps <= end)]
    lines = window.melt(id_vars=["ts"], value_vars=["actual", *shown], var_name="series",
                        value_name="queue")
    figure = px.line(lines, x="ts", y="queue", color="series", labels={"ts": "time", "queue": "queue length"},
                     category_orders={"series": ["actual", *shown]})
    figure.update_traces(selector={"name": "actual"}, line={"width": 3, "color": "black"})
    st.plotly_chart(figure, width="stretch")
    st.caption(f"{len(window):,} of the holdout's {len(frame):,} scored rows.")


def error_chart(frame: pd.DataFrame) -> None:
    st.subheader("Error distribution")
    long = predictor.errors(frame)
    clip = st.slider("Clip errors at the quantile", 0.9, 1.0, 0.99, 0.005,
                     help="A few large misses (bursts) stretch the axis; larger ones are left out.")
    bound = long["error"].abs().quantile(clip)
    kept = long[long["error"].abs() <= bound] if bound > 0 else long
    st.plotly_chart(px.histogram(kept, x="error", color="method", barmode="overlay", nbins=80,
                                 opacity=0.6, labels={"error": "forecast − actual"}), width="stretch")
    st.plotly_chart(px.box(long, x="method", y="error", color="method", points=False,
                           labels={"error": "forecast − actual"}), width="stretch")


st.title("Predictor: forecast vs actual")
choices, note = predictor.models()
found = predictor.datasets()
if note:
    st.warning(f"**MLflow is unavailable.** {note}; only a local checkpoint can be shown.", icon="⚠️")
if not choices:
    st.info(f"No predictor yet: no `predictor` champion in the registry and no "
            f"`models/{predictor.CHECKPOINT}` in the data home. {predictor.HOW_TO_TRAIN}")
if not found:
    st.info(f"No queue_metrics dataset in the data home's `data/` yet. {predictor.HOW_TO_BUILD}")
if choices and found and (chosen := controls(choices, found)) is not None:
    choice, dataset = chosen
    try:
        held = predictor.holdout(choice, dataset, predictor.dataset_mtime(dataset))
    except predictor.HoldoutError as error:
        st.error(f"This dataset cannot be scored: {error}")
    else:
        origin = {True: "the dataset the model was trained on: these rows were held out of its fitting",
                  False: "another dataset than the one the model was trained on",
                  None: "a dataset the model does not record as its own"}[held.same_data]
        st.caption(f"Holdout: the latest {predictor.HOLDOUT_FRACTION:.0%} of {held.rows:,} usable rows "
                   f"({len(held.frame):,} scored, {held.frame['ts'].min():%Y-%m-%d %H:%M} to "
                   f"{held.frame['ts'].max():%Y-%m-%d %H:%M} UTC), of {origin}.")
        if "seasonal_naive" not in held.methods:
            st.caption("Less than a day of history before these rows: no seasonal-naive baseline.")
        scores(held)
        forecast_chart(held.frame, held.methods)
        error_chart(held.frame)
