"""The PriorityMax dashboard: ``streamlit run dashboard/app.py`` (``pmx up`` serves it on :8501).

One entry script with ``st.navigation``; each page file under ``views/`` holds UI only (a folder named
``pages/`` would also be listed by Streamlit as pages of its own), and reads
and writes through ``dashboard/data/`` (cached with ``st.cache_data``). A page whose service is
down says so instead of failing."""

import streamlit as st

st.set_page_config(page_title="PriorityMax Workbench", page_icon=":material/monitoring:", layout="wide")

PAGES = {
    "Workbench": [
        st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("views/runs.py", title="Runs", icon=":material/show_chart:"),
        st.Page("views/models.py", title="Models", icon=":material/model_training:"),
    ],
    "Live": [
        st.Page("views/autoscaler.py", title="Autoscaler", icon=":material/dns:"),
        st.Page("views/config_flags.py", title="Config & Flags", icon=":material/toggle_on:"),
        st.Page("views/workflows.py", title="Workflows", icon=":material/account_tree:"),
    ],
    "Models in depth": [
        st.Page("views/rl.py", title="RL", icon=":material/smart_toy:"),
        st.Page("views/predictor.py", title="Predictor", icon=":material/query_stats:"),
    ],
}

st.navigation(PAGES).run()
