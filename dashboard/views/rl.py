"""RL: one seeded episode of the PPO policy against the best tuned rule and the HPA rule on a chosen
trace, step by step."""

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.data import rl
from dashboard.ui import key_values

COLORS = {rl.PPO: "#636efa", rl.HPA: "#ef553b", rl.BEST: "#00cc96"}


def controls(choices: list[rl.ModelChoice]) -> tuple[rl.ModelChoice, str, int, int] | None:
    labels = {c.label: c for c in choices}
    traces = {t.label: t.source for t in rl.traces()}
    top = st.columns([3, 3, 1, 1])
    choice = labels[top[0].selectbox("Policy", list(labels))]
    trace = top[1].selectbox("Trace", list(traces))
    try:
        details = rl.policy_details(choice)
    except rl.EpisodeError as error:
        st.error(f"{choice.label} cannot be read: {error}")
        return None
    seed = int(top[2].number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1))
    steps = int(top[3].number_input("Steps", min_value=10, max_value=20_160,
                                    value=details["episode_steps"], step=60,
                                    help="Episode length in simulator steps (the policy trained on "
                                         f"episodes of {details['episode_steps']})"))
    st.caption(f"**{choice.label}**: trained on `{details['traffic']}` ({details['trainer']}, "
               f"hidden size {details['hidden_dim']}). A trace is replayed on its held-out latest "
               "part (what `pmx eval_rl` scores a policy on), the synthetic profile whole; the seed "
               "picks where the episode starts and draws the arrivals, the same for both policies.")
    return choice, traces[trace], seed, steps


def gain(ppo: float, other: float) -> str | None:
    return f"{(ppo - other) / abs(other):+.1%}" if other else None


def totals(frame: pd.DataFrame, steps: int, best: tuple[str, dict]) -> None:
    summary = rl.summary(frame).set_index("policy")
    ppo, rule, hpa = summary.loc[rl.PPO], summary.loc[rl.BEST], summary.loc[rl.HPA]
    key_values({
        "PPO total reward": f"{ppo.total_reward:,.2f}",
        "Best tuned rule": f"{best[0]} {best[1]}",
        "Best rule total reward": f"{rule.total_reward:,.2f}",
        "PPO vs best rule": gain(ppo.total_reward, rule.total_reward),
        "PPO vs HPA": gain(ppo.total_reward, hpa.total_reward),
        "Steps": f"{steps:,}",
        "PPO mean workers": f"{ppo.mean_workers:.1f}",
        "Best rule mean workers": f"{rule.mean_workers:.1f}",
        "PPO SLA violations": f"{ppo.sla_violations:,.0f} ({ppo.violation_rate:.2%})",
        "Best rule SLA violations": f"{rule.sla_violations:,.0f} ({rule.violation_rate:.2%})",
    })
    st.dataframe(summary.reset_index(), hide_index=True, width="stretch")
    st.caption("Reward = −(worker cost + SLA penalty + churn cost). An SLA violation is a task that "
               "arrives into a projected wait beyond its class's SLA, or is dropped. The best tuned "
               "rule: the one the policy's gate compared it with, as the gate recorded it; without a "
               "recorded gate, HPA, Erlang-C, queue-threshold, static and predictive Erlang-C, each "
               "tuned on the policy's training traffic, the best on its held-out episodes.")


def charts(frame: pd.DataFrame) -> None:
    st.subheader("Arrivals")
    arrivals = rl.per_class(frame[frame["policy"] == rl.PPO], "arrivals")
    st.plotly_chart(px.area(arrivals, x="time", y="value", color="class",
                            labels={"value": "tasks per step"}), width="stretch")
    st.caption("The same arrivals for every policy (same seed).")

    st.subheader("Queue length per class")
    queues = rl.per_class(frame, "queue")
    figure = px.line(queues, x="time", y="value", color="policy", facet_row="class",
                     color_discrete_map=COLORS, labels={"value": "tasks"},
                     height=220 * queues["class"].nunique())
    figure.update_yaxes(matches=None)
    st.plotly_chart(figure, width="stretch")

    st.subheader("Workers")
    workers = frame.melt(id_vars=["time", "policy"], value_vars=["workers", "active_workers"],
                         var_name="count", value_name="number")
    workers["count"] = workers["count"].map({"workers": "paid (active + warming)",
                                             "active_workers": "active"})
    st.plotly_chart(px.line(workers, x="time", y="number", color="policy", line_dash="count",
                            color_discrete_map=COLORS, labels={"number": "workers"}), width="stretch")

    st.subheader("Reward")
    cumulative = st.toggle("Cumulative", value=True)
    column = "cumulative_reward" if cumulative else "reward"
    st.plotly_chart(px.line(frame, x="time", y=column, color="policy", color_discrete_map=COLORS,
                            labels={column: "cumulative reward" if cumulative else "reward per step"}),
                    width="stretch")


st.title("RL: PPO vs the best tuned rule")
choices, note = rl.policies()
if note:
    st.warning(f"**MLflow is unavailable.** {note}; only a local checkpoint can be shown.",
               icon=":material/warning:")
if not choices:
    st.info(f"No RL policy yet: no `rl_agent` champion in the registry and no `models/{rl.CHECKPOINT}` "
            f"in the data home. {rl.HOW_TO_TRAIN}")
elif (chosen := controls(choices)) is not None:
    choice, trace, seed, steps = chosen
    try:
        best = rl.best_rule(choice)
        episode = rl.episode(choice, trace, seed, steps)
    except rl.EpisodeError as error:
        st.error(f"This episode cannot be run: {error}")
    else:
        totals(episode, steps, best)
        charts(episode)
