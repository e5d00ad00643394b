"""Small UI pieces every page uses: the plain message for a service that is down, JSON-ish tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from dashboard.data.services import APIRefused, ServiceDown

T = TypeVar("T")


def unavailable(error: ServiceDown) -> None:
    st.warning(f"**{error.service} is unavailable.** {error}", icon=":material/warning:")


def attempt(load: Callable[[], T], fallback: T | None = None) -> T | None:
    """``load()``, or ``fallback`` after telling the reader plainly what is down or refused."""
    try:
        return load()
    except ServiceDown as error:
        unavailable(error)
    except APIRefused as error:
        st.error(f"The API refused: {error}")
    return fallback


def rows(load: Callable[[], T], empty: str) -> T | None:
    """``load()``'s frame when it has rows; otherwise None, after saying why (the service is down or
    refused, or ``empty`` when there is nothing yet)."""
    found = attempt(load)
    if found is not None and found.empty:
        st.caption(empty)
        return None
    return found


def key_values(values: dict[str, Any], columns: int = 4) -> None:
    """A row of ``st.metric``s."""
    items = list(values.items())
    for start in range(0, len(items), columns):
        for column, (label, value) in zip(st.columns(columns), items[start:start + columns], strict=False):
            column.metric(label, "—" if value is None else value)
