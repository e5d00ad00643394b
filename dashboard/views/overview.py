"""Overview: are the services up, who is champion, what ran last."""

import streamlit as st

from dashboard.data import models, runs, services
from dashboard.ui import attempt, key_values, rows

st.title("PriorityMax Workbench")

st.subheader("Services")
health = services.health()
st.dataframe([{"service": h.service, "up": h.state, "where": h.url, "detail": h.detail} for h in health],
             hide_index=True, width="stretch",
             column_config={"detail": st.column_config.TextColumn(width="large")})
down = [h.service for h in health if not h.up]
if down:
    st.info(f"Down: {', '.join(down)}. Pages that need them say so; `pmx up` starts the API, a worker "
            "and Dagster.", icon=":material/info:")
else:
    st.caption(":material/check_circle: Every service answers.")

st.subheader("Champions")
versions = attempt(models.versions)
if versions is not None:
    champions = models.champions(versions)
    key_values({f"{name} champion": f"v{version}" if version else "none"
                for name, version in champions.items()}, columns=2)
    if not versions.empty:
        st.dataframe(models.aliased(versions), hide_index=True, width="stretch")

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
        st.dataframe(found[["job", "status", "launched_by", "created"]], hide_index=True, width="stretch",
                     column_config={"launched_by": st.column_config.TextColumn("launched by",
                                                                               help=runs.LAUNCHED_BY_HELP),
                                    "created": st.column_config.DatetimeColumn(format="MM-DD HH:mm")})
