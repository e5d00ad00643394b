"""Overview: are the services up, who is champion, what ran last."""

import streamlit as st

from dashboard.data import models, runs, services
from dashboard.ui import attempt, key_values, rows

st.title("PriorityMax Workbench")

st.subheader("Services")
health = services.health()
st.dataframe([{"service": h.service, "up": "✅ up" if h.up else "❌ down", "where": h.url, "detail": h.detail}
              for h in health], hide_index=True, width="stretch")
down = [h.service for h in health if not h.up]
if down:
    st.info(f"Down: {', '.join(down)}. Pages that need them say so; `pmx up` starts the API, a worker "
            "and Dagster.")

st.subheader("Champions")
versions = attempt(models.versions)
if versions is not None:
    champions = models.champions(versions)
    key_values({f"{name} champion": f"v{version}" if version else "none"
                for name, version in champions.items()}, columns=2)
    if not versions.empty:
        st.dataframe(versions[versions["aliases"] != ""].drop(columns=["gate_detail", "run_id"]),
                     hide_index=True, width="stretch")

left, right = st.columns(2)
with left:
    st.subheader("Latest MLflow runs")
    found = rows(runs.mlflow_runs, "No runs yet.")
    if found is not None:
        st.dataframe(found[["experiment", "run_name", "status", "start_time"]].head(10), hide_index=True,
                     width="stretch")
with right:
    st.subheader("Latest Dagster runs")
    found = rows(lambda: runs.dagster_runs(10), "No runs yet.")
    if found is not None:
        st.dataframe(found[["job", "status", "created", "launched_by"]], hide_index=True, width="stretch")
