"""Load forecasts made with each decision, from the readings the worker has received.

The predictor (``ml.predictor.model.PredictorModel``) forecasts the load per step (its target,
``arrivals`` or ``requests``) from that load's own history and the calendar alone, so a worker can
forecast from what its readings carry: the arrival rate (tasks/s) times the model's step. Each
tenant's load is kept as one row per step (a later reading in a step replaces the earlier one),
and only as the contiguous run since its last gap: the model's lags and windows never reach
across a gap (``ml.predictor.features`` partitions them by segment), so older rows could never
feed a forecast. A forecast that cannot be made says why, is counted, and the decision goes on.
"""

from __future__ import annotations

import collections
import logging
import threading
from datetime import UTC, datetime

import pandas as pd

from api.autoscaler.metrics import AutoscalerMetrics
from api.autoscaler.schemas import Forecast, Reading
from ml.predictor.data import DEFAULT_TARGETS, DataError
from ml.serving import ServedPredictor

log = logging.getLogger("api.autoscaler")

#: Why a decision has no forecast: the label values of ``forecast_unavailable_total``.
NO_PREDICTOR, UNSUPPORTED_TARGET, SHORT_HISTORY, ERROR = (
    "no_predictor", "unsupported_target", "short_history", "error")
#: Rows kept per tenant beyond what the model needs, and at most (a model needing more is never
#: served a forecast: its reason says how many rows it needs).
HISTORY_SLACK, HISTORY_LIMIT = 16, 5_000
#: Tenants whose history is kept; the one updated longest ago is dropped first.
TENANTS_LIMIT = 1_000


class LoadHistory:
    """Each tenant's load, one row per step of ``interval`` seconds, the latest ``rows`` of its
    contiguous run. Thread-safe: the route forecasts on a thread pool."""

    def __init__(self, interval: int, rows: int, tenants: int = TENANTS_LIMIT) -> None:
        self.interval = interval
        self.rows = rows
        self.tenants = tenants
        self._loads: dict[str | None, collections.deque[tuple[int, float]]] = {}
        self._lock = threading.Lock()

    def add(self, tenant: str | None, when: datetime, load: float) -> list[tuple[int, float]]:
        """Record ``load`` at the step of ``when``; the tenant's rows (step's epoch second,
        load), oldest first. A reading from before the rows held is dropped."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # a naive time is taken as UTC, as decide.py does
        step = int(when.timestamp()) // self.interval * self.interval
        with self._lock:
            loads = self._loads.pop(tenant, None)
            if loads is None:
                if len(self._loads) >= self.tenants:
                    self._loads.pop(next(iter(self._loads)))
                loads = collections.deque(maxlen=self.rows)
            self._loads[tenant] = loads  # re-inserted: the least recently updated stay first
            behind = (loads[-1][0] - step) // self.interval if loads else -1
            if behind < 0:  # a new step
                if loads and step != loads[-1][0] + self.interval:
                    loads.clear()  # a gap: the rows before it can never feed a forecast
                loads.append((step, load))
            elif behind < len(loads):  # a step held already: the later reading wins
                loads[-1 - behind] = (step, load)
            return list(loads)

    def resize(self, rows: int) -> None:
        """Keep ``rows`` per tenant from now on (a model with longer windows was swapped in)."""
        with self._lock:
            self.rows = rows
            self._loads = {t: collections.deque(loads, maxlen=rows) for t, loads in self._loads.items()}


class LoadForecaster:
    """Forecasts with whatever predictor the worker serves; its history follows the model's step
    and length (a model with another step starts it afresh)."""

    def __init__(self, metrics: AutoscalerMetrics) -> None:
        self.metrics = metrics
        self.history: LoadHistory | None = None
        #: The gauge's (horizon, quantile) labels set per tenant, to drop them when stale.
        self._published: dict[str, list[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def forecast(self, predictor: ServedPredictor | None, reading: Reading) -> Forecast:
        """Record the reading's load and forecast from its tenant's history (~50 ms once there is
        enough of it). Never raises: a forecast that cannot be made is ``available: false`` with
        the reason, counted in ``forecast_unavailable_total``."""
        if predictor is None:
            return self._unavailable(reading, NO_PREDICTOR, "no predictor version is loaded")
        model, version = predictor.model, predictor.version
        spec = model.spec
        described = {"model_version": version, "target": spec.target,
                     "interval_seconds": spec.interval_seconds}
        if spec.target not in DEFAULT_TARGETS:
            return self._unavailable(reading, UNSUPPORTED_TARGET,
                                     f"predictor version {version} forecasts {spec.target!r}, not "
                                     f"the load ({' or '.join(DEFAULT_TARGETS)})", **described)
        rows = self._history(spec.interval_seconds, spec.history + 1).add(
            reading.tenant, reading.timestamp or datetime.now(UTC),
            reading.arrival_rate * spec.interval_seconds)
        described["history_rows"] = len(rows)
        history = pd.DataFrame({"timestamp": pd.to_datetime([s for s, _ in rows], unit="s", utc=True),
                                spec.target: [load for _, load in rows]})
        try:
            made = model.forecast_latest(history)
        except DataError as error:
            reason = SHORT_HISTORY if len(rows) < spec.history + 1 else ERROR
            return self._unavailable(reading, reason, f"predictor version {version}: {error}", **described)
        except Exception as error:  # a model that breaks on live data must not break decisions
            log.exception("predictor version %s failed to forecast", version)
            return self._unavailable(reading, ERROR, f"predictor version {version} failed to forecast "
                                                     f"({type(error).__name__}: {error})", **described)
        self._publish(reading.tenant or "", made["horizons"])
        return Forecast(available=True, at=made["at"], horizons=made["horizons"], **described)

    def _history(self, interval: int, needed: int) -> LoadHistory:
        rows = min(needed + HISTORY_SLACK, HISTORY_LIMIT)
        with self._lock:
            if self.history is None or self.history.interval != interval:
                self.history = LoadHistory(interval, rows)
            elif self.history.rows < rows:
                self.history.resize(rows)
            return self.history

    def _publish(self, tenant: str, horizons: dict[str, dict[str, float]]) -> None:
        """Set the tenant's gauge; the series of as many tenants as histories are kept, at most."""
        with self._lock:
            self._drop(tenant)
            if len(self._published) >= TENANTS_LIMIT:
                self._drop(next(iter(self._published)))
            self._published[tenant] = []
            for horizon, values in horizons.items():
                for quantile, value in values.items():
                    self.metrics.load_forecast.labels(tenant, horizon, quantile).set(value)
                    self._published[tenant].append((horizon, quantile))

    def _drop(self, tenant: str) -> None:
        for labels in self._published.pop(tenant, ()):
            self.metrics.load_forecast.remove(tenant, *labels)

    def _unavailable(self, reading: Reading, reason: str, text: str, **described) -> Forecast:
        """No forecast for this decision: counted, and the tenant's last one is dropped from the
        gauge rather than left standing there as if current."""
        self.metrics.forecast_unavailable.labels(reason=reason).inc()
        with self._lock:
            self._drop(reading.tenant or "")
        return Forecast(available=False, reason=text, **described)
