"""Config & Flags: every item and flag (global and per tenant), edit a value, a key's versions
with a diff, rollback, per-tenant flag toggles, the audit log's aggregations, live changes."""

import json

import streamlit as st

from dashboard.data import config
from dashboard.data.services import APIRefused, ServiceDown
from dashboard.ui import attempt, key_values, unavailable

NEW = "+ new…"  # plain text: an emoji renders as an empty box without an emoji font
#: How often the live panel re-reads the follower (seconds).
LIVE_EVERY_S = 2.0

st.title("Config & Flags")


def flash(message: str) -> None:
    """Show ``message`` after the rerun that refreshes the tables."""
    st.session_state["cf_flash"] = message
    st.rerun()


def write(action, done: str) -> None:
    """Run a write; on success flash ``done`` (formatted with the answer) and refresh."""
    try:
        result = action()
    except ServiceDown as error:
        unavailable(error)
    except APIRefused as error:
        st.error(f"The API refused: {error}")
    else:
        flash(done.format(**result))


def chosen_key(choice: str, new_key_widget: str, label: str) -> str:
    if choice == NEW:
        return st.text_input(label, key=new_key_widget).strip()
    return choice


# ------------------------------------------------------------------------------ config items
def prefill_value() -> None:
    """The editor starts from the chosen key's current value in the chosen layer."""
    key = st.session_state.get("cf_key")
    found = config.current(config.CONFIG, key, st.session_state.get("cf_tenant", "").strip() or None) \
        if key and key != NEW else None
    st.session_state["cf_value"] = config.pretty(found["value"]) if found else ""


def items_tab(items) -> None:
    if items.empty:
        st.caption("No config items yet.")
    else:
        st.dataframe(items, hide_index=True, width="stretch")

    st.subheader("Edit a value")
    keys = sorted(items["key"].unique())
    left, right = st.columns(2)
    with left:
        choice = st.selectbox("Key", [NEW, *keys], index=1 if keys else 0, key="cf_key",
                              on_change=prefill_value)
        key = chosen_key(choice, "cf_new_key", "New key (e.g. autoscaler.max_workers)")
    with right:
        tenant = st.text_input("Tenant", key="cf_tenant", placeholder="org:<id>; empty for the global layer",
                               on_change=prefill_value).strip()
    if "cf_value" not in st.session_state:
        prefill_value()
    found = config.current(config.CONFIG, key, tenant or None) if key else None
    secret = bool(found and found.get("is_secret"))
    if secret:
        st.info(f"{key} is a secret: its value is never shown, and it is written through "
                "/config/secrets with an admin token, not here.")
    text = st.text_area("Value (JSON)", key="cf_value", height=140, disabled=secret)
    comment = st.text_input("Comment", key="cf_comment", placeholder="why (recorded with the version)")
    if st.button("Save", key="cf_save", type="primary", disabled=secret):
        try:
            value = json.loads(text)
        except ValueError as error:
            st.error(f"The value is not JSON: {error}")
            return
        if not key:
            st.error("Name the key first.")
            return
        layer = f" for {tenant}" if tenant else ""
        write(lambda: config.save(key, value, comment.strip() or None, tenant or None),
              f"Saved {{key}}{layer}: version {{version}}.")


# ------------------------------------------------------------------------------------ flags
def flags_tab(flags) -> None:
    if flags.empty:
        st.caption("No flags yet.")
    else:
        st.markdown("**On or off per layer** (a tenant without an entry follows global)")
        st.dataframe(config.flag_matrix(flags), hide_index=True, width="stretch")
        st.dataframe(flags, hide_index=True, width="stretch")

    st.subheader("Toggle a flag")
    names = sorted(flags["flag"].unique())
    left, right = st.columns(2)
    with left:
        choice = st.selectbox("Flag", [NEW, *names], index=1 if names else 0, key="cf_flag")
        name = chosen_key(choice, "cf_new_flag", "New flag")
    with right:
        tenant = st.text_input("Tenant", key="cf_flag_tenant",
                               placeholder="org:<id>; empty for the global layer").strip()
    layer = tenant or "global"
    now = config.current(config.FLAG, name, tenant or None) if name else None
    if now is not None:
        state = "on" if isinstance(now["value"], dict) and now["value"].get("enabled") else "off"
        st.caption(f"{name} is {state} for {layer} (version {now['version']}, "
                   f"set by {now.get('updated_by')}).")
    elif name:
        st.caption(f"{name} has no entry for {layer} yet" + (": it follows global." if tenant else "."))
    currently_on = bool(now and isinstance(now["value"], dict) and now["value"].get("enabled"))
    enabled = st.toggle(f"Enabled for {layer}", value=currently_on, key=f"cf_flag_on::{name}::{layer}")
    if st.button("Apply", key="cf_flag_apply", type="primary", disabled=not name):
        write(lambda: config.set_flag(name, enabled, tenant or None),
              f"{name} is now {'on' if enabled else 'off'} for {layer} (version {{version}}).")


# ------------------------------------------------------------------------ history & rollback
def history_tab(items, flags) -> None:
    choices = {f"config · {r.key}" + ("" if r.tenant == "global" else f" @ {r.tenant}"):
               (config.CONFIG, r.key, None if r.tenant == "global" else r.tenant) for r in items.itertuples()}
    choices |= {f"flag · {r.flag}" + ("" if r.layer == "global" else f" @ {r.layer}"):
                (config.FLAG, r.flag, None if r.layer == "global" else r.layer) for r in flags.itertuples()}
    if not choices:
        st.caption("Nothing to show: no config item or flag yet.")
        return
    label = st.selectbox("Item", list(choices), key="cf_history_item")
    kind, key, tenant = choices[label]
    found = attempt(lambda: config.versions(kind, key, tenant))
    if found is None:
        return
    st.dataframe(found.assign(value=found["value"].map(json.dumps)), hide_index=True, width="stretch")

    numbers = found["version"].tolist()
    by_version = dict(zip(found["version"], found["value"], strict=True))
    st.subheader("Diff")
    left, right = st.columns(2)
    older = left.selectbox("From version", numbers, index=min(1, len(numbers) - 1), key=f"cf_from::{label}")
    newer = right.selectbox("To version", numbers, index=0, key=f"cf_to::{label}")
    changes = config.diff(by_version[older], by_version[newer], f"{key} v{older}", f"{key} v{newer}")
    if changes:
        st.code(changes, language="diff")
    else:
        st.caption(f"Versions {older} and {newer} hold the same value.")

    st.subheader("Roll back")
    target = st.selectbox("Version to restore", numbers[1:] or numbers, key=f"cf_rollback::{label}")
    st.caption("The chosen version's value is written as a new version. The API allows it to admin "
               "tokens only.")
    if st.button("Roll back", key="cf_rollback"):
        try:
            result = config.rollback(kind, key, target, tenant)
        except ServiceDown as error:
            unavailable(error)
        except APIRefused as error:
            why = " Rollback is an admin action: give the dashboard an admin token " \
                  "(PRIORITYMAX_API_TOKEN) to use it." if error.status == 403 else ""
            st.error(f"The API refused the rollback (HTTP {error.status}): {error.detail}.{why}")
        else:
            flash(f"Rolled {key} back to version {target}: now version {result['version']}.")


# ------------------------------------------------------------------------------- audit log
def audit_tab() -> None:
    events = config.audit_events()
    st.caption(f"From {config.audit_path()}, aggregated with DuckDB.")
    if events.empty:
        st.caption("No change recorded in the audit log yet.")
        return
    left, right = st.columns(2)
    with left:
        st.markdown("**Changes per key**")
        st.dataframe(config.changes_per_key(events), hide_index=True, width="stretch")
    with right:
        st.markdown("**Changes per actor**")
        st.dataframe(config.changes_per_actor(events), hide_index=True, width="stretch")
    st.markdown("**Latest changes**")
    st.dataframe(events.head(50), hide_index=True, width="stretch")


# ------------------------------------------------------------------------------------ live
@st.fragment(run_every=LIVE_EVERY_S)
def live_panel() -> None:
    follower = config.live()
    client = follower.client
    latest = follower.latest()
    key_values({"Revision": client.revision, "Connection": client.state,
                "Items followed": len(client.items()), "Changes seen": len(latest)})
    if client.last_error and not client.connected:
        st.caption(f"Last error: {client.last_error}")
    if latest.empty:
        st.caption("No change since the dashboard started following; changes appear here as they happen.")
    else:
        st.dataframe(latest, hide_index=True, width="stretch")


if message := st.session_state.pop("cf_flash", None):
    st.success(message)

listed = attempt(lambda: (config.items(), config.flags()))
if listed is None:
    st.subheader("Audit log")
    audit_tab()
else:
    items, flags = listed
    st.caption(f"{len(items)} config items and {len(flags)} flag entries across layers.")
    tabs = st.tabs(["Config items", "Flags", "History & rollback", "Audit log", "Live"])
    with tabs[0]:
        items_tab(items)
    with tabs[1]:
        flags_tab(flags)
    with tabs[2]:
        history_tab(items, flags)
    with tabs[3]:
        audit_tab()
    with tabs[4]:
        st.caption("Changes pushed by the API's WebSocket (client.control_plane.ConfigClient), refreshed "
                   f"every {LIVE_EVERY_S:.0f} s.")
        live_panel()
