"""An OpenFeature provider over :class:`client.control_plane.ConfigClient`.

Why: code that already speaks OpenFeature (hooks, other providers in tests, vendor-neutral
flag calls) can use the control plane's flags without knowing our client. Each evaluation is a
lookup in the client's live snapshot, decided by :func:`client.flags.evaluate` - the
function the server's ``/evaluate`` uses - so both always agree.

Evaluation context: the attribute ``tenant`` (``org:<id>``) selects the tenant layer (tenant,
then global); ``targeting_key`` is the rollout's default context value (``targetingKey``), and
every other attribute is available to a flag whose ``context_key`` names it.

Booleans are the control plane's flags. Reasons: ``STATIC`` (the global layer decided),
``TARGETING_MATCH`` (the tenant's override), ``SPLIT`` (a percentage rollout), ``CACHED`` (any
of those, answered from the last snapshot while the control plane is unreachable; the
underlying reason is in ``flag_metadata["evaluation_reason"]``) and ``DEFAULT`` with an error
code when the caller's default is returned: ``FLAG_NOT_FOUND`` (no layer defines the flag),
``TARGETING_KEY_MISSING``/``INVALID_CONTEXT`` (a rollout without its context value),
``PROVIDER_NOT_READY`` (no snapshot yet). ``flag_metadata`` carries ``layer``, ``tenant``,
``chain`` (the layers consulted, comma-separated: metadata values must be scalars),
``version`` and the snapshot's ``revision``.

Strings, integers, floats and objects resolve to the *config item* of that key (tenant, then
global; reasons as above). A value of another JSON type is ``TYPE_MISMATCH`` (an integer is
accepted as a float, a boolean is never a number); a secret is ``GENERAL`` since clients only
ever see its mask.

Events: READY once the first snapshot is loaded (the OpenFeature registry sends it when
:meth:`initialize` returns), ERROR when none could be had within ``init_timeout`` (READY
follows once the client does get one), STALE when the connection drops, READY when it is back,
CONFIGURATION_CHANGED (``flags_changed``: the keys) for each change applied.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata, ProviderStatus

from api.config.service import TENANT_PATTERN
from client.control_plane import CONFIG, ERROR, READY, STALE, ConfigClient

NAME = "prioritymax-config"
Context = EvaluationContext | None


class InvalidContext(Exception):
    pass


def split_context(context: EvaluationContext | None) -> tuple[str | None, dict[str, Any]]:
    """The tenant and the rollout context of an evaluation context."""
    if context is None:
        return None, {}
    attributes = dict(context.attributes)
    tenant = attributes.pop("tenant", None)
    if tenant is not None and (not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant)):
        raise InvalidContext(f"attribute 'tenant' must be org:<id>, not {tenant!r}")
    if context.targeting_key is not None:
        attributes["targetingKey"] = context.targeting_key
    return tenant, attributes


class ConfigFeatureProvider(AbstractProvider):
    """Resolve OpenFeature flags from a :class:`ConfigClient` (see the module docstring).

    ``close_client``: close the client on :meth:`shutdown` (when the provider owns it).
    """

    def __init__(self, client: ConfigClient, *, init_timeout: float = 10.0,
                 close_client: bool = False) -> None:
        super().__init__()
        self.client = client
        self.init_timeout = init_timeout
        self.close_client = close_client
        self._lock = threading.Lock()
        self._status = ProviderStatus.NOT_READY  # what this provider last announced
        self._initializing = False
        self._unsubscribe: list[Callable[[], None]] = []

    def get_metadata(self) -> Metadata:
        return Metadata(name=NAME)

    # --------------------------------------------------------------------------- lifecycle
    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Wait for the first snapshot; the registry then sends READY (or ERROR if this raises)."""
        with self._lock:
            self._initializing = True
        if not self._unsubscribe:
            self._unsubscribe = [self.client.on_state(self._state_changed),
                                 self.client.on_change(self._changed)]
        self.client.start()
        loaded = self.client.wait_ready(self.init_timeout)
        with self._lock:
            self._initializing = False
            loaded = loaded or self.client.loaded
            self._status = ProviderStatus.READY if loaded else ProviderStatus.ERROR
        if not loaded:
            raise ProviderNotReadyError(f"no config snapshot from {self.client.url} within "
                                        f"{self.init_timeout} s: {self.client.last_error}")

    def shutdown(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        if self.close_client:
            self.client.close()

    def _state_changed(self, state: str) -> None:
        """Client state -> provider events, each sent once per transition."""
        with self._lock:
            if self._initializing:
                return  # initialize() announces the outcome itself
            wanted = {READY: ProviderStatus.READY, STALE: ProviderStatus.STALE,
                      ERROR: ProviderStatus.ERROR}.get(state)
            if wanted is None or wanted == self._status:
                return
            if wanted == ProviderStatus.ERROR and self._status != ProviderStatus.NOT_READY:
                return  # after a first snapshot a failure is STALE, not ERROR
            self._status = wanted
        if wanted == ProviderStatus.READY:
            self.emit_provider_ready(ProviderEventDetails(message="config snapshot is live"))
        elif wanted == ProviderStatus.STALE:
            self.emit_provider_stale(ProviderEventDetails(
                message=f"serving the last config snapshot: {self.client.last_error}"))
        else:
            self.emit_provider_error(ProviderEventDetails(
                message=f"no config snapshot: {self.client.last_error}",
                error_code=ErrorCode.PROVIDER_NOT_READY))

    def _changed(self, message: dict[str, Any]) -> None:
        # Also while STALE: the replay after a reconnect is applied before READY is announced.
        if self._status in (ProviderStatus.READY, ProviderStatus.STALE):
            self.emit_provider_configuration_changed(ProviderEventDetails(
                flags_changed=[message["key"]], metadata={"revision": message["revision"]}))

    # ---------------------------------------------------------------------------- booleans
    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: Context = None) -> FlagResolutionDetails[bool]:
        client = self.client
        if not client.loaded:
            return _error(default_value, ErrorCode.PROVIDER_NOT_READY, "no config snapshot yet")
        try:
            tenant, context = split_context(evaluation_context)
        except InvalidContext as error:
            return _error(default_value, ErrorCode.INVALID_CONTEXT, str(error))
        result = client.flag(flag_key, tenant, context)
        metadata: dict[str, Any] = {"chain": ",".join(result.chain), "revision": client.revision,
                                    "evaluation_reason": result.reason}
        if result.layer is not None:
            metadata.update(layer=result.layer, version=result.version)
        if tenant is not None:
            metadata["tenant"] = tenant
        if result.layer is None:
            return _error(default_value, ErrorCode.FLAG_NOT_FOUND, f"no flag {flag_key!r}", metadata)
        if result.error is not None:
            missing_key = "targetingKey" in result.error
            code = ErrorCode.TARGETING_KEY_MISSING if missing_key else ErrorCode.INVALID_CONTEXT
            return _error(default_value, code, result.error, metadata)
        reason = Reason.CACHED if client.stale else result.reason
        return FlagResolutionDetails(value=result.enabled, reason=reason,
                                     variant="on" if result.enabled else "off", flag_metadata=metadata)

    # ------------------------------------------------------------------ other types: config
    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: Context = None) -> FlagResolutionDetails[str]:
        return self._resolve_value(flag_key, default_value, evaluation_context, "string")

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: Context = None) -> FlagResolutionDetails[int]:
        return self._resolve_value(flag_key, default_value, evaluation_context, "integer")

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: Context = None) -> FlagResolutionDetails[float]:
        return self._resolve_value(flag_key, default_value, evaluation_context, "float")

    def resolve_object_details(self, flag_key: str, default_value: Any,
                               evaluation_context: Context = None) -> FlagResolutionDetails[Any]:
        return self._resolve_value(flag_key, default_value, evaluation_context, "object")

    def _resolve_value(self, key: str, default_value: Any, evaluation_context: Context,
                       wanted: str) -> FlagResolutionDetails[Any]:
        client = self.client
        if not client.loaded:
            return _error(default_value, ErrorCode.PROVIDER_NOT_READY, "no config snapshot yet")
        try:
            tenant, _ = split_context(evaluation_context)
        except InvalidContext as error:
            return _error(default_value, ErrorCode.INVALID_CONTEXT, str(error))
        item, layer = client.lookup(CONFIG, key, tenant)
        if item is None:
            return _error(default_value, ErrorCode.FLAG_NOT_FOUND, f"no config item {key!r}")
        metadata = {"layer": layer, "version": item["version"], "revision": client.revision,
                    "chain": f"tenant:{tenant},global" if tenant else "global"}
        if tenant is not None:
            metadata["tenant"] = tenant
        if item["is_secret"]:
            return _error(default_value, ErrorCode.GENERAL, f"{key!r} is a secret; clients only see its mask",
                          metadata)
        value = _typed(item["value"], wanted)
        if value is None:
            return _error(default_value, ErrorCode.TYPE_MISMATCH,
                          f"{key!r} is {type(item['value']).__name__}, not {wanted}", metadata)
        reason = Reason.TARGETING_MATCH if layer == "tenant" else Reason.STATIC
        metadata["evaluation_reason"] = str(reason)
        return FlagResolutionDetails(value=value, reason=Reason.CACHED if client.stale else reason,
                                     flag_metadata=metadata)


def _typed(value: Any, wanted: str) -> Any:
    """``value`` as the wanted OpenFeature type, or None when it is not one."""
    if wanted == "string":
        return value if isinstance(value, str) else None
    if wanted == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if wanted == "float":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return value if isinstance(value, dict | list) else None


def _error(default_value: Any, code: ErrorCode, message: str,
           metadata: dict[str, Any] | None = None) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(value=default_value, reason=Reason.DEFAULT, error_code=code,
                                 error_message=message, flag_metadata=metadata or {})
