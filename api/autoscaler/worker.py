"""An autoscaler worker: scaling decisions from the promoted models, hot-swapped as they change.

The loop it closes: ``pmx models promote`` (or the admin API, or Dagster's promote_job) moves the
registry's ``champion`` alias and writes the version to the control plane
(``autoscaler.policy_version``, ``predictor.model_version``); this worker follows the control plane
with the Python client (``client/control_plane.py``) and, on a new version, loads it on its loader thread and
swaps it in. Decisions never wait for a load and never see half a swap: the models in use are one
immutable :class:`~ml.serving.ModelSet` read once per decision.

Which version: at start, the registry's champions; from then on, the control plane's value once its
snapshot is loaded (it is the live channel a promotion or a rollback writes to), with the latest
request winning when several arrive while one loads. A version that fails to load is refused: the
one in use keeps serving, the failure is counted, shown in the health and sent to Slack.

Beside the champion, the worker holds the registry's rl_agent ``challenger`` (asked for at start and
every PRIORITYMAX_SHADOW_REFRESH_SECONDS): it decides in the shadow of every reading, off the request
path (``shadow.py``), so it is proven on live traffic and already loaded when it is promoted. A
promotion to the version held in the shadow is a pointer flip: one assignment, nothing loads.

Each decision carries the served predictor's load forecast for the tenant, made from the
readings this worker received (``forecast.py``); without enough of them, or without a predictor,
the decision says why there is none and is made all the same.

Flags steer it per tenant: ``autoscaler_loop`` (off: hold, no change; undefined: on) and the config
key ``autoscaler.mode`` (``policy`` or ``hpa``). With the control plane unreachable the client keeps
serving its last snapshot, so flags and models stay as they were; the health says so.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from api.autoscaler import decide
from api.autoscaler.forecast import LoadForecaster
from api.autoscaler.metrics import AutoscalerMetrics
from api.autoscaler.schemas import MODE_HOLD, MODE_HPA, MODE_POLICY, Decision, Forecast, Reading
from api.autoscaler.shadow import LoggedDecision, ShadowRunner
from client.control_plane import READY, ConfigClient
from ml.registry import CONFIG_KEYS
from ml.serving import POLICY, PREDICTOR, ModelLoadError, ModelSet, challenger, champion, load
from ml.sim.config import SimConfig
from ml.sim.policies import HPAPolicy
from prioritymax.alerts import post_slack
from prioritymax.settings import Settings, get_settings

log = logging.getLogger("api.autoscaler")

LOOP_FLAG = "autoscaler_loop"
MODE_KEY = "autoscaler.mode"
#: Model name by the config key that carries its live version.
MODEL_BY_KEY = {key: name for name, key in CONFIG_KEYS.items()}
#: Tenants whose HPA stabilization windows are kept (each a few floats).
HPA_TENANTS_LIMIT = 10_000
RECENT_DECISIONS = 200
#: The loader thread's nice value (higher: lower priority).
LOADER_NICE = 10


class AutoscalerWorker:
    """Serves :meth:`decide`; ``api_url`` (None: do not follow a control plane) and ``token`` (a
    viewer's or above) name the control plane to follow."""

    def __init__(self, settings: Settings | None = None, *, name: str | None = None,
                 api_url: str | None = None, token: str | None = None, alert=post_slack) -> None:
        self.settings = settings or get_settings()
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = AutoscalerMetrics()
        self.forecaster = LoadForecaster(self.metrics)
        #: What decisions are made with now; replaced whole by the loader thread (see module doc).
        self.models = ModelSet()
        self.config: ConfigClient | None = None
        if api_url is not None:
            if token is None:
                raise ValueError("following a control plane needs a token (viewer or above)")
            self.config = ConfigClient(api_url, token, start=False)
        #: The latest decisions (with the challenger's, once scored); dicts only when asked for.
        self.recent: collections.deque[LoggedDecision] = collections.deque(maxlen=RECENT_DECISIONS)
        self.swaps: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_DECISIONS)
        self.swap_count = 0
        self.last_load_error: dict[str, Any] | None = None
        self.started_at = time.time()
        self._alert = alert
        self._loader = ThreadPoolExecutor(1, thread_name_prefix=f"autoscaler-loader-{self.name}",
                                          initializer=_lower_priority)
        self._requests: dict[str, tuple[int, str | None]] = {}  # model -> (sequence, version asked)
        self._sequence = 0
        #: Held for every change of what is asked for and every write of :attr:`models`.
        self._request_lock = threading.Lock()
        self.shadow = ShadowRunner(self.metrics, self.name, initializer=_lower_priority)
        self._challenger_due: Future | None = None
        self._challenger_refused: str | None = None  # a version that failed to load: not retried
        self._stop = threading.Event()
        self._pending: set[Future] = set()
        self._rng = np.random.default_rng()
        self._hpa: dict[str | None, HPAPolicy] = {}
        #: Decisions come from the event loop (POSTs) and from gRPC threads (KEDA): the HPA
        #: windows and the latest decisions are changed under this lock (~0.1 ms held).
        self._decide_lock = threading.Lock()
        #: tenant -> (when, reading, decision) of its latest decision, for KEDA's ``posted`` readings.
        self._latest: dict[str | None, tuple[float, Reading, Decision]] = {}
        #: Forecasts made off the request path (KEDA's calls), one at a time; more are dropped.
        self._forecasts = ThreadPoolExecutor(1, thread_name_prefix=f"autoscaler-forecast-{self.name}")
        self._forecast_due: Future | None = None
        self._default_config = SimConfig()
        for model in (POLICY, PREDICTOR):
            self.metrics.model_version.labels(model=model).set(0)

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> AutoscalerWorker:
        """Ask for the registry's champions, then follow the control plane (both in the background:
        :meth:`wait_loaded` blocks until the loads asked for so far are done)."""
        for model in (POLICY, PREDICTOR):
            self.request(model, None, "registry")
        if self.settings.shadow_refresh_seconds > 0:
            self.request_challenger()
            threading.Thread(target=self._follow_challenger, daemon=True,
                             name=f"autoscaler-challenger-{self.name}").start()
        if self.config is not None:
            self.config.on_change(self._on_change)
            self.config.on_state(self._on_state)
            self.config.start()
        return self

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Whether every load asked for so far finished (swapped in or refused) within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._request_lock:
                pending = [f for f in self._pending if not f.done()]
            if not pending:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            pending[0].exception(timeout=left)  # waits; a load's own errors are handled inside it

    def close(self) -> None:
        self._stop.set()
        self.shadow.close()
        if self.config is not None:
            self.config.close()
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._forecasts.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------------------- model swaps
    def request(self, model: str, version: str | None, source: str) -> Future | None:
        """Load ``version`` of ``model`` (None: the registry's champion) and swap it in, unless a
        later request supersedes it first. None when that version is already the one asked for."""
        with self._request_lock:
            asked = self._requests.get(model)
            if version is not None and asked is not None and asked[1] == version:
                return None
            self._sequence += 1
            self._requests[model] = (self._sequence, version)
            if model == POLICY and self._flip(version, source):
                return None
            future = self._loader.submit(self._load, model, version, source, self._sequence)
            self._pending = {f for f in self._pending if not f.done()} | {future}
        return future

    def _flip(self, version: str | None, source: str) -> bool:
        """Promote the challenger held in the shadow, if it is ``version``: one assignment (under
        the request lock, so no load in flight can overwrite it: it is superseded)."""
        models = self.models
        if version is None or models.challenger is None or models.challenger.version != version:
            return False
        before = models.version(POLICY)
        self.models = models.promoting_challenger(source)
        self._swapped(POLICY, before, version, source, flip=True)
        return True

    def _superseded(self, model: str, sequence: int) -> bool:
        return self._requests[model][0] != sequence

    def _load(self, model: str, version: str | None, source: str, sequence: int) -> None:
        if self._superseded(model, sequence):
            return
        try:
            if version is None:
                version = champion(model)
                if version is None:
                    log.info("%s: no champion in the registry yet; nothing to load", model)
                    return
                with self._request_lock:
                    if not self._superseded(model, sequence):
                        self._requests[model] = (sequence, version)
            if self.models.version(model) == version:
                return
            served = load(model, version, source)
        except ModelLoadError as error:
            self._refuse(model, version, source, str(error))
            return
        except Exception as error:  # the registry unreachable while resolving the champion, ...
            self._refuse(model, version, source, f"{type(error).__name__}: {error}")
            return
        with self._request_lock:
            if self._superseded(model, sequence):
                log.info("%s version %s loaded but superseded; not swapped in", model, version)
                return
            models = self.models
            before = models.version(model)
            models = models.with_model(served)
            if models.challenger is not None and models.challenger.version == version:
                models = models.with_challenger(None)  # the shadow was promoted by another path
            self.models = models  # the swap: one assignment
            self._swapped(model, before, version, source, flip=False)

    def _swapped(self, model: str, before: str | None, version: str, source: str, *, flip: bool) -> None:
        swap = {"model": model, "from": before, "to": version, "source": source, "at": time.time(),
                "pointer_flip": flip}
        self.swaps.append(swap)
        self.swap_count += 1
        self.metrics.swaps.labels(model=model).inc()
        self.metrics.model_version.labels(model=model).set(_numeric(version))
        if flip:
            self.metrics.challenger_version.set(0)
        log.info("%s: now serving version %s (was %s; from the %s%s)", model, version, before, source,
                 ", the shadow challenger's pointer flipped" if flip else "")

    # --------------------------------------------------------------------- the shadow challenger
    def request_challenger(self) -> Future | None:
        """Ask the registry for its rl_agent challenger and hold it in the shadow (on the loader
        thread; None while such a request is already queued)."""
        with self._request_lock:
            due = self._challenger_due
            if due is not None and not due.done():
                return None
            future = self._challenger_due = self._loader.submit(self._load_challenger)
            self._pending = {f for f in self._pending if not f.done()} | {future}
        return future

    def _follow_challenger(self) -> None:
        while not self._stop.wait(self.settings.shadow_refresh_seconds):
            self.request_challenger()

    def _load_challenger(self) -> None:
        models = self.models
        held = models.challenger
        try:
            version = challenger(POLICY)
            if held is not None and held.version != version and held.version == champion(POLICY):
                # Promoted in the registry (which drops its challenger alias), not yet live here:
                # the control plane's message, on its way, flips it in. Dropped now, it would load.
                return
        except Exception as error:  # the registry unreachable: keep the shadow as it is
            log.warning("cannot ask the registry for the %s challenger: %s", POLICY, error)
            return
        if version is None or version == models.version(POLICY):
            if models.challenger is not None:
                self._set_challenger(None, f"the registry has no other {POLICY} challenger")
            return
        if (held is not None and held.version == version) or version == self._challenger_refused:
            return
        try:
            served = load(POLICY, version, "registry challenger")
        except ModelLoadError as error:
            self._challenger_refused = version
            self.metrics.load_failures.labels(model=f"{POLICY}_challenger").inc()
            log.warning("%s challenger version %s not shadowed: %s", POLICY, version, error)
            return
        self._set_challenger(served, "the registry's challenger")

    def _set_challenger(self, served: Any, why: str) -> None:
        with self._request_lock:
            if served is not None and served.version == self.models.version(POLICY):
                return  # promoted while it loaded
            self.models = self.models.with_challenger(served)
        self.metrics.challenger_version.set(0 if served is None else _numeric(served.version))
        log.info("%s shadow: %s (%s)", POLICY, "none" if served is None else f"version {served.version}", why)

    def _refuse(self, model: str, version: str | None, source: str, reason: str) -> None:
        serving = self.models.version(model)
        self.last_load_error = {"model": model, "version": version, "source": source, "error": reason,
                                "at": time.time(), "serving": serving}
        self.metrics.load_failures.labels(model=model).inc()
        text = (f"worker {self.name}: {model} version {version} refused, still serving "
                f"{serving or 'nothing'}: {reason}")
        log.error("%s", text)
        try:
            self._alert(text, source="autoscaler", settings=self.settings)
        except Exception:
            log.exception("the load-failure alert failed")

    def _on_change(self, message: dict[str, Any]) -> None:
        """On the client's thread: a new live version of a model is asked for."""
        model = MODEL_BY_KEY.get(message.get("key"))
        if model is None or message.get("kind") != "config" or message.get("tenant") is not None:
            return
        if message.get("item") is None:
            return  # the key was deleted: keep serving what is loaded
        self.request(model, str(message["value"]), "control_plane")
        # The registry's challenger after a promotion is picked up at the next refresh: asked for
        # here, every worker would query the registry at once, just as the new version goes live.

    def _on_state(self, state: str) -> None:
        self.metrics.control_plane_up.set(1 if state == READY else 0)
        if state == READY:  # the snapshot may hold versions set while this worker was away
            for key, model in MODEL_BY_KEY.items():
                value = self.config.get(key) if self.config is not None else None
                if value is not None and str(value) != self.models.version(model):
                    self.request(model, str(value), "control_plane")

    # ------------------------------------------------------------------------------ decisions
    def forecast(self, reading: Reading) -> Forecast:
        """Record the reading's load and forecast the tenant's with the predictor in use (~50 ms
        with enough history: the route calls this on a thread, off the event loop). The load is
        recorded even for a reading that :meth:`decide` refuses: its arrival rate is still the
        pool's load."""
        return self.forecaster.forecast(self.models.predictor, reading)

    def forecast_later(self, reading: Reading) -> None:
        """:meth:`forecast` on a background thread: the reading's load is recorded and the
        forecast gauges follow, without the caller waiting ~50 ms. While one is queued, another
        is dropped (the history keeps one row per step anyway)."""
        due = self._forecast_due
        if due is None or due.done():
            self._forecast_due = self._forecasts.submit(self._forecast_quietly, reading)

    def _forecast_quietly(self, reading: Reading) -> None:
        try:
            self.forecast(reading)
        except Exception:  # a forecast never fails a decision; counted by the forecaster
            log.exception("a background forecast failed")

    def policy_config(self) -> SimConfig:
        """The served policy's simulator configuration (classes, bounds), else the default one."""
        policy = self.models.policy
        return policy.config if policy is not None else self._default_config

    def latest_decision(self, tenant: str | None) -> tuple[float, Reading, Decision] | None:
        """(when, reading, decision) of the tenant's latest decision, None before its first."""
        with self._decide_lock:
            return self._latest.get(tenant)

    def decide(self, reading: Reading, forecast: Forecast | None = None) -> Decision:
        """One decision, with ``forecast`` (None: made here, :meth:`forecast`); a
        :class:`~api.autoscaler.decide.ReadingError` for a reading that does not fit the policy's
        classes. Never waits for a load, never fails for want of a model."""
        if forecast is None:
            forecast = self.forecast(reading)
        with self._decide_lock:
            return self._decide(reading, forecast)

    def _decide(self, reading: Reading, forecast: Forecast) -> Decision:
        started = time.perf_counter()  # the decision's own time: forecasts take far longer
        models = self.models  # read once: this decision's policy and predictor
        policy = models.policy
        config = policy.config if policy is not None else self._default_config
        decide.per_class(config, reading.queue, "queue")  # the same 422 in every mode
        tenant = reading.tenant
        mode = reading.mode or self._mode(tenant)
        fallback, probability = False, None
        if not self._loop_on(tenant):
            mode, action, delta = MODE_HOLD, decide.hold_action(config), 0
            reason = f"{LOOP_FLAG} is off for {tenant or 'the global layer'}"
        elif mode == MODE_POLICY and policy is not None:
            action, delta, probability, outside = decide.policy_step(policy, reading, self._rng)
            reason = f"rl_agent version {policy.version}"
            if outside is not None:
                fallback = True
                self.metrics.fallbacks.labels(reason="out_of_range").inc()
                reason = f"{reason}'s base rule: {outside}"
        else:
            if mode == MODE_POLICY:
                fallback = True
                self.metrics.fallbacks.labels(reason="no_policy").inc()
                reason = "HPA rule: no rl_agent version is loaded"
            else:
                reason = "HPA rule: mode hpa"
            mode = MODE_HPA
            action, delta = decide.hpa_step(self._hpa_for(tenant, config), reading)
        decision = Decision(
            tenant=tenant, mode=mode, action=action, delta=delta,
            current_workers=decide.current_workers(reading),
            target_workers=decide.target(config, reading, delta),
            policy_version=policy.version if policy is not None and mode == MODE_POLICY else None,
            predictor_version=models.version(PREDICTOR), fallback=fallback, reason=reason,
            action_probability=probability, forecast=forecast, worker=self.name)
        now = time.time()
        entry = LoggedDecision(now, decision)
        self.recent.append(entry)
        if models.challenger is not None:
            self.shadow.submit(entry, reading, config, models.challenger)
        self.metrics.decisions.labels(mode=mode).inc()
        self.metrics.decision_latency.observe(time.perf_counter() - started)
        if tenant not in self._latest and len(self._latest) >= HPA_TENANTS_LIMIT:
            self._latest.pop(next(iter(self._latest)))
        self._latest[tenant] = (now, reading, decision)
        return decision

    def _loop_on(self, tenant: str | None) -> bool:
        return self.config is None or self.config.is_enabled(LOOP_FLAG, tenant, default=True)

    def _mode(self, tenant: str | None) -> str:
        value = self.config.get(MODE_KEY, tenant, default=MODE_POLICY) if self.config else MODE_POLICY
        return value if value in (MODE_POLICY, MODE_HPA) else MODE_POLICY

    def _hpa_for(self, tenant: str | None, config: SimConfig) -> HPAPolicy:
        hpa = self._hpa.get(tenant)
        if hpa is None or hpa.config != config:
            if len(self._hpa) >= HPA_TENANTS_LIMIT:
                self._hpa.clear()
            hpa = self._hpa[tenant] = HPAPolicy(config)
            hpa.reset(1)
        return hpa

    def recent_decisions(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` decisions, oldest first, each with when it was made."""
        return [{"at": entry.at, **entry.decision.model_dump(exclude={"worker"}), "shadow": entry.shadow}
                for entry in list(self.recent)[-limit:]]

    # --------------------------------------------------------------------------------- health
    def health(self) -> dict[str, Any]:
        models = self.models
        problems = []
        client = self.config
        plane: dict[str, Any] = {"following": client is not None}
        if client is not None:
            plane |= {"url": client.url, "state": client.state, "connected": client.connected,
                      "stale": client.stale, "revision": client.revision, "last_error": client.last_error}
            if not client.connected:
                problems.append(f"control plane at {client.url} unreachable "
                                f"({client.last_error or client.state}); serving the last snapshot "
                                f"(revision {client.revision}) and the loaded models")
        if models.policy is None:
            problems.append("no rl_agent version loaded: decisions use the HPA rule")
        loading = not self.wait_loaded(0)
        status = "starting" if loading and models.policy is None else ("degraded" if problems else "ok")
        return {
            "ok": True, "worker": self.name, "status": status, "problems": problems,
            "control_plane": plane,
            "models": [_state(POLICY, models.policy), _state(PREDICTOR, models.predictor)],
            "challenger": self._challenger_state(models.challenger),
            "swaps": self.swap_count, "last_swap": self.swaps[-1] if self.swaps else None,
            "last_load_error": self.last_load_error,
            "uptime_seconds": round(time.time() - self.started_at, 1),
        }

    def _challenger_state(self, served: Any) -> dict[str, Any] | None:
        """The shadow challenger and its record on live traffic (None when none is held)."""
        if served is None:
            return None
        return {**_state(POLICY, served), **self.shadow.summary(served.version)}


def _state(name: str, served: Any) -> dict[str, Any]:
    if served is None:
        return {"name": name, "version": None, "loaded_at": None, "source": None}
    return {"name": name, "version": served.version, "loaded_at": served.loaded_at, "source": served.source}


def _lower_priority() -> None:
    """The loader thread yields the CPU to the threads that serve decisions: on Linux a thread has
    its own nice value. A load is ~50 ms of CPU (MLflow's lookups, torch's checkpoint reader);
    with many workers on few cores swapping at once, decisions would otherwise queue behind them."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICE)
        except OSError:
            log.debug("could not lower the loader thread's priority")


def _numeric(version: str) -> float:
    try:
        return float(version)
    except ValueError:
        return 0.0
