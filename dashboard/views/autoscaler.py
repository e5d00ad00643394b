"""Autoscaler: the live loop (a trace replayed through the worker), each connected worker's health,
the model versions it serves, its recent decisions, its shadow challenger against the champion, and
model swaps. A worker that does not answer is shown as down."""

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.data import autoscaler
from dashboard.data.services import APIRefused, ServiceDown
from dashboard.ui import attempt, key_values, rows, unavailable

st.title("Autoscaler")

urls = autoscaler.urls()
if not urls:
    st.info("No worker configured: set PRIORITYMAX_AUTOSCALER_URL (comma-separated for several).")
else:
    st.dataframe(autoscaler.overview(), hide_index=True, width="stretch")


#: How often the live replay's charts are redrawn (the replay writes a step a second at 60x; each
#: redraw reads the timeline and draws three charts, so not every second on a small machine).
LIVE_SECONDS = 5


def replay_charts(frame) -> list:
    """Load, the two pools, and the served pool's queue per class, over the trace's time."""
    margin = {"l": 20, "r": 20, "t": 40, "b": 20}
    load = px.line(frame, x="trace_time", y="arrival_rate", title="Load (arrivals, tasks/s)",
                   labels={"trace_time": "", "arrival_rate": "tasks/s"})
    pools = px.line(autoscaler.replay_pools(frame), x="trace_time", y="workers", color="pool",
                    line_shape="hv", title="Workers: the worker's decisions vs the HPA rule",
                    labels={"trace_time": ""})
    queues = px.area(autoscaler.replay_queues(frame), x="trace_time", y="tasks", color="class",
                     title="Queue per priority class (served pool)", labels={"trace_time": ""})
    for figure in (load, pools, queues):
        figure.update_layout(height=250, margin=margin, legend={"orientation": "h", "y": -0.2})
    return [load, pools, queues]


@st.fragment(run_every=LIVE_SECONDS)
def live_replay() -> None:
    """The closed loop, live: ``pmx replay`` (started by ``pmx up``) feeds the worker the
    simulator's pool replaying a trace and applies its decisions; this redraws what it wrote."""
    st.subheader("Live loop")
    frame = autoscaler.replay_timeline()
    if frame is None:
        st.caption("No replay is running on this data home: `pmx replay` (started by `pmx up`) feeds the "
                   "worker the simulated pool of a trace and applies its decisions.")
        return
    latest = frame.iloc[-1]
    totals = autoscaler.replay_totals(frame)
    served = totals["served_cost"] + totals["served_penalty"]
    hpa = totals["hpa_cost"] + totals["hpa_penalty"]
    load, workers, decided, cost = st.columns(4)
    load.metric("Load", f"{latest['arrival_rate']:.1f}/s")
    workers.metric("Workers", int(latest["workers"]), delta=int(latest["workers"] - latest["hpa_workers"]),
                   delta_color="off", help="the served pool; the change is against the HPA twin")
    decided.metric("Decided by", latest["mode"] if pd.isna(latest["policy_version"])
                   else f"v{latest['policy_version']}", help=str(latest["reason"]))
    cost.metric("Cost + SLA penalty", f"{served:.1f}", delta=f"{served - hpa:+.1f} vs HPA",
                delta_color="inverse", help="summed over the steps shown, in the reward's units")
    st.caption(f"Trace time {latest['trace_time']:%Y-%m-%d %H:%M} UTC, {len(frame)} steps shown. Latest "
               f"decision: {latest['reason']}. The HPA pool is a twin fed the same arrivals: what HPA "
               "would have done.")
    for index, figure in enumerate(replay_charts(frame)):
        st.plotly_chart(figure, key=f"as_replay::{index}")


live_replay()


def uptime(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def decisions_chart(frame):
    figure = px.line(frame.sort_values("at"), x="at", y="target_workers", color="tenant", symbol="mode",
                     markers=True, hover_data=["current_workers", "delta", "policy_version", "reason"],
                     labels={"at": "", "target_workers": "target workers"})
    figure.update_layout(height=280, margin={"l": 20, "r": 20, "t": 30, "b": 20})
    return figure


def shadow_chart(frame):
    figure = px.line(autoscaler.shadow_series(frame), x="at", y="target_workers", color="side",
                     line_dash="tenant", markers=True, labels={"at": "", "target_workers": "target workers"})
    figure.update_layout(height=260, margin={"l": 20, "r": 20, "t": 30, "b": 20})
    return figure


def challenger_section(url: str, decisions) -> None:
    """Champion vs challenger: the registry's challenger decides in the shadow of every reading."""
    st.markdown("**Champion vs challenger**")
    held = autoscaler.challenger(url)
    if held is None:
        st.caption("No challenger in the shadow. The worker asks the registry for the rl_agent challenger "
                   "(the latest registered version) every PRIORITYMAX_SHADOW_REFRESH_SECONDS.")
        return
    agreement = held.get("agreement")
    key_values({"Challenger": f"rl_agent v{held['version']}", "Shadow decisions": held.get("decisions"),
                "Agreement": None if agreement is None else f"{agreement:.0%}",
                "Cost (served)": round(held["champion_cost"], 3),
                "Cost (challenger)": round(held["challenger_cost"], 3)}, columns=5)
    st.caption("Cost: each decision's counterfactual (worker cost, churn and SLA penalties until it takes "
               "effect, in the reward's units; lower is better), summed over the latest shadow decisions.")
    if decisions is not None and decisions["shadow_target"].notna().any():
        st.plotly_chart(shadow_chart(decisions), key=f"as_shadow::{url}")


def worker_section(url: str) -> None:
    try:
        found = autoscaler.health(url)
    except ServiceDown as error:
        st.subheader(f"Worker at {url}: down")
        unavailable(error)
        return
    except APIRefused as error:
        st.subheader(f"Worker at {url}")
        st.error(f"The worker refused: {error}")
        return
    st.subheader(f"Worker {found['worker']}")
    st.caption(url)
    models = attempt(lambda: autoscaler.models(url))
    versions = {} if models is None else {name: autoscaler.version_of(models, name)
                                          for name in ("rl_agent", "predictor")}
    key_values({"Status": found["status"], "rl_agent version": versions.get("rl_agent"),
                "predictor version": versions.get("predictor"), "Swaps": found.get("swaps"),
                "Uptime": uptime(found.get("uptime_seconds"))}, columns=5)
    for problem in found.get("problems") or []:
        st.warning(problem)
    if found.get("last_load_error"):
        error = found["last_load_error"]
        st.error(f"Last load failure: {error}")

    plane = found.get("control_plane") or {}
    if plane.get("following"):
        state = "connected" if plane.get("connected") else f"not connected ({plane.get('state')})"
        st.markdown(f"**Control plane**: {plane.get('url')} — {state}, revision {plane.get('revision')}"
                    + (f"; last error: {plane['last_error']}" if plane.get("last_error") else ""))
    else:
        st.markdown("**Control plane**: not followed (the worker serves the registry's champions).")

    if models is not None:
        st.markdown("**Models in use**")
        st.dataframe(models, hide_index=True, width="stretch")

    st.markdown("**Recent decisions**")
    found_decisions = rows(lambda: autoscaler.decisions(url), "No decision yet.")
    if found_decisions is not None:
        st.plotly_chart(decisions_chart(found_decisions), key=f"as_decisions::{url}")
        st.dataframe(autoscaler.decision_summary(found_decisions), hide_index=True, width="stretch")
        st.dataframe(found_decisions, hide_index=True, width="stretch")
    challenger_section(url, found_decisions)

    st.markdown("**Model swaps**")
    found_swaps = rows(lambda: autoscaler.swaps(url), "No swap since the worker started.")
    if found_swaps is not None:
        st.dataframe(found_swaps, hide_index=True, width="stretch")

for url in urls:
    st.divider()
    worker_section(url)
