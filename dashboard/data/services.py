"""The services the dashboard reads from, and a plain answer when one is down.

The API (config, flags, workflows, admin), the autoscaler workers, Dagster's webserver and MLflow
are each optional for the dashboard: a page whose service is down says so (:class:`ServiceDown`,
shown by :func:`dashboard.ui.unavailable`) instead of failing. The API is called with the token from
the settings (``Settings.api_client_token``: PRIORITYMAX_API_TOKEN, else the admin token).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd
import streamlit as st

from prioritymax.settings import Settings, get_settings

TIMEOUT_S = 5.0


class ServiceDown(RuntimeError):
    """A service did not answer; ``service`` names it, the message says where and why."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service


class APIRefused(RuntimeError):
    """The API answered with an error: ``status`` and its ``detail``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def utc(seconds: Any) -> pd.Timestamp | None:
    """Epoch seconds (as the API and Dagster give them) as a UTC timestamp; None for none."""
    return None if seconds is None or pd.isna(seconds) else pd.Timestamp(seconds, unit="s", tz="UTC")


def settings() -> Settings:
    return get_settings()


def autoscaler_urls() -> list[str]:
    """PRIORITYMAX_AUTOSCALER_URL, comma-separated for several workers."""
    return [u.strip().rstrip("/") for u in settings().autoscaler_url.split(",") if u.strip()]


def api(method: str, path: str, *, json: Any = None, params: dict | None = None) -> Any:
    """One API call with the settings' token (the API records the token's name as the actor); the
    JSON answer."""
    current = settings()
    token = current.api_client_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, f"{current.api_url.rstrip('/')}{path}", json=json, params=params,
                                 headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as error:
        raise ServiceDown("API", f"the API at {current.api_url} does not answer ({type(error).__name__}); "
                                 "start it with `pmx api` or `pmx up`") from None
    return answer(response)


def answer(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; an :class:`APIRefused` with the ``detail`` of any other."""
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:300]
        raise APIRefused(response.status_code, detail)
    return response.json() if response.content else None


def http_json(service: str, url: str, timeout: float = TIMEOUT_S) -> Any:
    """GET ``url``'s JSON; :class:`ServiceDown` naming ``service`` when it does not answer."""
    try:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise ServiceDown(service, f"{service} at {url} does not answer ({type(error).__name__})") from None
    return response.json()


@dataclass(frozen=True)
class Health:
    service: str
    url: str
    up: bool
    detail: str

    @property
    def state(self) -> str:
        """``up`` or ``down`` as plain text: a status cell readable without an emoji font."""
        return "up" if self.up else "down"


@st.cache_data(ttl=5, show_spinner=False)
def health() -> list[Health]:
    """Whether the API, Dagster's webserver, MLflow and each autoscaler worker answer. The checks run
    side by side: a busy service (Dagster's webserver while the pipeline trains) then costs the page
    its own wait, not the sum of every wait."""
    current = settings()
    checks = [("API", f"{current.api_url.rstrip('/')}/config/health"),
              ("Dagster", f"{current.dagster_url.rstrip('/')}/server_info")]
    checks += [(f"Autoscaler {url}", f"{url}/autoscaler/health") for url in autoscaler_urls()]
    with ThreadPoolExecutor(max_workers=len(checks) + 1) as pool:
        answers = [pool.submit(check_service, name, url) for name, url in checks]
        mlflow = pool.submit(mlflow_health)
        return [answer.result() for answer in answers] + [mlflow.result()]


def check_service(name: str, url: str) -> Health:
    """One service's health: down with the reason, or up with what its answer says."""
    started = time.perf_counter()
    try:
        body = http_json(name, url, timeout=2.0)
    except ServiceDown as error:
        return Health(name, url, False, str(error))
    elapsed_ms = 1000 * (time.perf_counter() - started)
    if name.startswith("Autoscaler"):
        return Health(name, url, True, worker_detail(body, elapsed_ms))
    return Health(name, url, True, f"answered in {elapsed_ms:.0f} ms")


def worker_detail(body: dict[str, Any], elapsed_ms: float) -> str:
    """An autoscaler worker's health in a few words: its status and the problems it reports, or,
    with none, how fast it answered (never a bare ``ok;``)."""
    status = body.get("status") or "unknown"
    problems = [str(p) for p in body.get("problems") or [] if p]
    if problems:
        return f"{status}: " + "; ".join(problems)
    return f"{status}, answered in {elapsed_ms:.0f} ms"


def mlflow_health() -> Health:
    from ml import registry

    current = settings()
    uri = current.mlflow_tracking_uri
    if not registry.registry_exists(current):
        return Health("MLflow", uri, False, "no MLflow store yet: nothing has been trained with --mlflow")
    try:
        registry.client(current).search_experiments(max_results=1)
    except Exception as error:  # a tracking server down, a broken store
        return Health("MLflow", uri, False, f"MLflow at {uri} does not answer ({type(error).__name__})")
    return Health("MLflow", uri, True, "store readable")
