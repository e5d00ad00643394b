"""Workflows: the stored workflows, a workflow's DAG (the API's layered layout), its runs and a
run's per-node Gantt from the trace replay."""

import plotly.graph_objects as go
import streamlit as st

from dashboard.data import workflows
from dashboard.ui import attempt, key_values, rows

#: Node colors by type (the spec's node types).
TYPE_COLORS = {"start": "#2ca02c", "end": "#7f7f7f", "task": "#1f77b4", "parallel": "#9467bd",
               "join": "#8c564b", "switch": "#ff7f0e", "timer": "#17becf", "subworkflow": "#e377c2"}
STATUS_COLORS = {"COMPLETED": "#2ca02c", "FAILED": "#d62728", "RUNNING": "#1f77b4", "CANCELLED": "#7f7f7f",
                 "SKIPPED": "#bcbd22"}

st.title("Workflows")


def dag_figure(layout: dict) -> go.Figure:
    """Nodes at the layout's coordinates, colored and labelled by type; edges as arrows."""
    figure = go.Figure()
    edges = workflows.edge_segments(layout)
    xs, ys = [], []
    for edge in edges.itertuples():
        xs += [edge.x0, edge.x1, None]
        ys += [edge.y0, edge.y1, None]
        figure.add_annotation(x=edge.x1, y=edge.y1, ax=edge.x0, ay=edge.y0, xref="x", yref="y", axref="x",
                              ayref="y", showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=1.5,
                              arrowcolor="#999", standoff=18, startstandoff=18, text="")
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#bbb", "width": 1.5},
                                hoverinfo="skip", showlegend=False))
    labelled = edges[edges["label"] != ""]
    if not labelled.empty:
        figure.add_trace(go.Scatter(x=labelled["mx"], y=labelled["my"], mode="text",
                                    text=labelled["label"], textfont={"size": 10, "color": "#555"},
                                    hoverinfo="text", showlegend=False))
    nodes = layout.get("nodes", [])
    for node_type in sorted({n["type"] for n in nodes}):
        group = [n for n in nodes if n["type"] == node_type]
        figure.add_trace(go.Scatter(
            x=[n["x"] for n in group], y=[n["y"] for n in group], mode="markers+text", name=node_type,
            marker={"size": 28, "color": TYPE_COLORS.get(node_type, "#444"),
                    "line": {"width": 1, "color": "#fff"}},
            text=[n.get("name") or n["node_id"] for n in group], textposition="bottom center",
            customdata=[[n["node_id"], n["layer"]] for n in group],
            hovertemplate=f"%{{customdata[0]}} ({node_type})<br>layer %{{customdata[1]}}<extra></extra>"))
    height = max(300, 160 + float(layout.get("height") or 0))
    figure.update_layout(height=height, margin={"l": 20, "r": 20, "t": 30, "b": 20},
                         legend_title_text="node type", xaxis={"visible": False},
                         yaxis={"visible": False, "autorange": "reversed"})
    return figure


def gantt_figure(frame) -> go.Figure:
    """A bar per node attempt from its start, in milliseconds since the run started, colored by
    status and labelled with its duration; a node too short to see gets the narrowest visible
    bar (:func:`dashboard.data.workflows.timeline_bars`)."""
    bars = workflows.timeline_bars(frame)
    figure = go.Figure()
    for status in dict.fromkeys(bars["status"]):
        group = bars[bars["status"] == status]
        figure.add_trace(go.Bar(
            y=group["label"], x=group["bar_ms"], base=group["start_ms"], orientation="h", name=status,
            marker={"color": STATUS_COLORS.get(status, "#444")}, text=group["duration"],
            textposition="auto", customdata=group[["duration", "node_type", "attempt"]].to_numpy(),
            hovertemplate="%{y} (%{customdata[1]}, attempt %{customdata[2]})<br>"
                          "from %{base:.3f} ms, took %{customdata[0]}<extra></extra>"))
    figure.update_yaxes(autorange="reversed", title=None, categoryorder="array",
                        categoryarray=list(dict.fromkeys(bars["label"])))
    figure.update_xaxes(title="ms since the run started", rangemode="tozero")
    figure.update_layout(height=max(220, 60 + 36 * len(frame)), barmode="overlay", legend_title_text="status",
                         margin={"l": 20, "r": 20, "t": 30, "b": 20})
    return figure


listed = attempt(workflows.workflows)
if listed is not None:
    if listed.empty:
        st.info("No workflow stored yet: POST a spec to /workflows/ (see examples/order_workflow.json).")
    else:
        st.dataframe(listed, hide_index=True, width="stretch")
        names = dict(zip(listed["workflow_id"], listed["name"], strict=True))
        workflow_id = st.selectbox("Workflow", list(names), format_func=lambda w: f"{names[w]} ({w})",
                                   key="wf_workflow")

        st.subheader("DAG")
        numbers = attempt(lambda: workflows.versions(workflow_id), [])
        version = st.selectbox("Version", numbers, key=f"wf_version::{workflow_id}") if numbers else None
        layout = attempt(lambda: workflows.preview(workflow_id, version))
        if layout is not None:
            st.plotly_chart(dag_figure(layout), key="wf_dag")
            st.caption(f"{len(layout['nodes'])} nodes in {layout.get('layers')} layers, "
                       f"{len(layout['edges'])} edges (layout from GET /workflows/{workflow_id}/preview).")

        st.subheader("Runs")
        found = rows(lambda: workflows.runs(workflow_id), "No run of this workflow yet.")
        if found is not None:
            st.dataframe(found, hide_index=True, width="stretch")
            statuses = dict(zip(found["run_id"], found["status"], strict=True))
            run_id = st.selectbox("Run", list(statuses), key=f"wf_run::{workflow_id}",
                                  format_func=lambda r: f"{r} ({statuses[r]})")
            trace = attempt(lambda: workflows.replay(run_id))
            if trace is not None:
                spans = workflows.spans(trace)
                key_values({"Status": trace["status"], "Version": trace["version"],
                            "Duration": f"{trace['duration_ms'] / 1000:.2f} s",
                            "Node attempts": len(spans)})
                st.subheader("Per-node timeline")
                if spans.empty:
                    st.caption("No node has started in this run yet.")
                else:
                    st.plotly_chart(gantt_figure(spans), key="wf_gantt")
                failed = spans[spans["status"] == "FAILED"]
                events = workflows.events(trace)
                for row in failed.itertuples():
                    errors = events[(events["node_id"] == row.node_id) & events["error"].notna()]["error"]
                    why = f": {errors.iloc[-1]}" if len(errors) else "."
                    st.error(f"Node {row.label} failed{why}")
                with st.expander("Events"):
                    st.dataframe(events, hide_index=True, width="stretch")
