"""Streamlit dashboard: runs, metric curves, model versions and promotions, config, workflows."""
