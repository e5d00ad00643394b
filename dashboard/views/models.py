"""Models: versions, aliases, gate results, the promotion timeline; promote and roll back through
the admin API (the code path of ``pmx models``; the API records the token's name as the actor)."""

import plotly.express as px
import streamlit as st

from dashboard.data import models
from dashboard.data.services import APIRefused, ServiceDown
from dashboard.ui import attempt, unavailable

st.title("Models")

versions = attempt(models.versions)
if versions is not None and versions.empty:
    st.info("No registered model yet: train with `--mlflow` or run the pipeline (`pmx up`).")
elif versions is not None:
    for name in models.MODEL_NAMES:
        own = versions[versions["model"] == name]
        st.subheader(name)
        if own.empty:
            st.caption("No version registered.")
            continue
        aliases = {alias: f"v{row.version}" for row in own.itertuples()
                   for alias in row.aliases.split(",") if alias}
        st.markdown(f"champion **{aliases.get('champion', 'none')}** · challenger "
                    f"{aliases.get('challenger', 'none')} · {len(own)} versions")
        st.dataframe(models.model_table(own).drop(columns="model"), hide_index=True, width="stretch")
        with st.expander(f"{name}: gate results"):
            for row in own.itertuples():
                st.markdown(f"**v{row.version}** ({row.gate})")
                st.json(row.gate_detail or {"gate": "not run"}, expanded=False)
        left, right = st.columns(2)
        with left.form(f"promote-{name}"):
            version = st.selectbox("Version", own["version"].tolist()[::-1], key=f"version-{name}")
            reason = st.text_input("Reason (for the audit log)", key=f"reason-{name}")
            force = st.checkbox("Force past the gate (admin)", key=f"force-{name}")
            if st.form_submit_button(f"Promote {name}"):
                try:
                    done = models.promote(name, version, reason or "dashboard", force)
                    was = done["previous_champion"] or "none"
                    st.success(f"{name} v{done['version']} is champion (was {was}), promoted by "
                               f"{done['actor']}; {done['published']['key']} = {done['published']['value']}")
                except ServiceDown as error:
                    unavailable(error)
                except APIRefused as error:
                    st.error(f"Not promoted: {error.detail}")
        with right:
            if st.button(f"Roll back {name}", key=f"rollback-{name}"):
                try:
                    done = models.rollback(name)
                    st.success(f"{name}: champion back to v{done['version']} (from v{done['from_version']}), "
                               f"by {done['actor']}")
                except ServiceDown as error:
                    unavailable(error)
                except APIRefused as error:
                    st.error(f"Not rolled back: {error.detail}")

st.subheader("Promotion timeline")
events = models.timeline()
if events.empty:
    st.caption("No promotion, rollback or archive recorded yet (`logs/models_audit.jsonl`).")
else:
    figure = px.scatter(events, x="at", y="model", color="event", symbol="event",
                        hover_data=["version", "previous", "actor", "forced", "reason"])
    figure.update_traces(marker={"size": 12})
    st.plotly_chart(figure, width="stretch")
    st.dataframe(events.sort_values("at", ascending=False), hide_index=True, width="stretch")
