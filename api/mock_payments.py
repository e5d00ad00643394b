"""``POST /mock/payments``: a MOCK payment provider, for the example workflow only. No money moves.

``examples/order_workflow_local.json`` is the seed's order pipeline with its payment step pointed
here instead of ``https://payment.example.com`` (which does not resolve), so a new user's first run
ends COMPLETED. The route checks the body, makes up a payment id and answers a payment record with
``status: "captured"``; nothing is charged, written to disk or sent anywhere.

**No token.** Every other route checks a role, but an ``http`` node can only send the headers its
spec spells out, and a token written there would be stored and returned with the spec in plaintext
(DESIGN.md decision 7). So the route is open and kept harmless instead: it calls nothing, answers a
small bounded record, reads at most :data:`MAX_BODY_BYTES` of a body (413 past that), parses it as
:class:`~api.config.routes.common.StrictJSONRequest`, and remembers at most
:data:`MAX_REMEMBERED_KEYS` idempotency keys.

**Idempotency.** The http executor sends an ``Idempotency-Key`` header, the same for every attempt
of a node and for its call in a resumed run. The first request with a key captures a payment (201);
the same key with the same payment answers the same record again (200, ``Idempotent-Replayed:
true``) and charges nothing twice; the same key with another order, amount or currency is a 422, as
in the IETF's draft-ietf-httpapi-idempotency-key-header. A request without a key is always a new
payment. The keys live in this process's memory only: the oldest is forgotten past
:data:`MAX_REMEMBERED_KEYS`, all are lost on restart, and API replicas do not share them -- enough
for a demo, not for money.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.config.routes.common import StrictJSONRequest

#: The most bytes of a request body read; the example's body is ~200 bytes (its variables and the
#: verify step's result), so this leaves room for bigger runs and still bounds each request.
MAX_BODY_BYTES = 64 * 1024
#: The most idempotency keys remembered (per API process); the oldest is forgotten first.
MAX_REMEMBERED_KEYS = 1024
MAX_KEY_CHARS = 255
#: A bound on ``amount``, so a record's numbers stay plain (and far from a double's range).
MAX_AMOUNT = 1_000_000
MOCK_NOTE = "mock, for the example workflow; no money moves"
TAG = "mock payments (example workflow only; no money moves)"


class PaymentTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413, f"a mock payment body is at most {MAX_BODY_BYTES} bytes")


class BoundedJSONRequest(StrictJSONRequest):
    """A :class:`StrictJSONRequest` whose body is read up to :data:`MAX_BODY_BYTES` and no further:
    an open route must not buffer whatever a caller streams at it."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise PaymentTooLarge
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise PaymentTooLarge
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


class BoundedJSONRoute(APIRoute):
    """Hands the handler a :class:`BoundedJSONRequest`."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            return await handler(BoundedJSONRequest(request.scope, request.receive))

        return bounded


OrderId = (Annotated[int, Field(strict=True, ge=0, le=2**53)]
           | Annotated[str, Field(min_length=1, max_length=64)])


class PaymentRequest(BaseModel):
    """What the example's payment node sends: the run's variables (``order_id`` from the run's
    input, ``amount`` and ``currency`` from the spec's defaults) and ``upstream``, the earlier
    nodes' results. Fields other than these three are ignored, since a run may carry any variables."""

    model_config = ConfigDict(extra="ignore")
    order_id: OrderId = Field(description="the order paid for: a non-negative integer or a short string")
    amount: float = Field(strict=True, gt=0, le=MAX_AMOUNT,
                          description=f"a positive number with at most 2 decimals, at most {MAX_AMOUNT}")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$", description="an ISO 4217 code such as EUR")

    @field_validator("amount")
    @classmethod
    def _whole_cents(cls, amount: float) -> float:
        if round(amount, 2) != amount:
            raise ValueError("amount has more than 2 decimals (a payment is in whole cents)")
        return amount


class PaymentRecord(BaseModel):
    payment_id: str = Field(description="made up here: pay_ and 32 hex digits")
    status: Literal["captured"] = "captured"
    order_id: OrderId
    amount: float
    currency: str
    idempotency_key: str | None = Field(description="the Idempotency-Key it was captured under, if any")
    mock: Literal[True] = Field(True, description=MOCK_NOTE)


class KeyReused(Exception):
    """An Idempotency-Key already captured a different payment."""


class MockLedger:
    """The payment captured under each Idempotency-Key, at most ``capacity`` keys (least recently
    used forgotten first). Used from the event loop only, with no await inside a call, so a
    repeated request cannot interleave with the first one."""

    def __init__(self, capacity: int = MAX_REMEMBERED_KEYS) -> None:
        self.capacity = capacity
        self._by_key: OrderedDict[str, PaymentRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_key)

    def capture(self, payment: PaymentRequest, key: str | None) -> tuple[PaymentRecord, bool]:
        """The payment's record, and whether it was captured before under ``key`` (a replay).
        Raises :class:`KeyReused` when ``key`` captured another order, amount or currency."""
        known = self._by_key.get(key) if key is not None else None
        if known is not None:
            if (known.order_id, known.amount, known.currency) != (
                    payment.order_id, payment.amount, payment.currency):
                raise KeyReused
            self._by_key.move_to_end(key)
            return known, True
        record = PaymentRecord(payment_id=f"pay_{uuid.uuid4().hex}", order_id=payment.order_id,
                               amount=payment.amount, currency=payment.currency, idempotency_key=key)
        if key is not None:
            self._by_key[key] = record
            while len(self._by_key) > self.capacity:
                self._by_key.popitem(last=False)
        return record, False


async def get_ledger(request: Request) -> MockLedger:
    """The app's ledger, made on first use (async: FastAPI would run a sync one on a thread)."""
    ledger = getattr(request.app.state, "mock_payment_ledger", None)
    if ledger is None:
        ledger = request.app.state.mock_payment_ledger = MockLedger()
    return ledger


router = APIRouter(prefix="/mock", tags=[TAG], route_class=BoundedJSONRoute)


@router.post(
    "/payments", status_code=201, response_model=PaymentRecord,
    summary="Capture a MOCK payment (for the example workflow; no money moves)",
    responses={200: {"description": "a replay: this Idempotency-Key captured this payment before",
                     "model": PaymentRecord},
               413: {"description": f"a body over {MAX_BODY_BYTES} bytes"},
               422: {"description": "a missing or bad order_id, amount or currency, or an "
                                    "Idempotency-Key reused for another payment"}})
async def capture_payment(
    payment: PaymentRequest,
    response: Response,
    ledger: Annotated[MockLedger, Depends(get_ledger)],
    idempotency_key: Annotated[str | None, Header(
        min_length=1, max_length=MAX_KEY_CHARS,
        description="the same key answers the same payment (the http executor sends one)")] = None,
) -> PaymentRecord:
    """A **mock**, for the example workflow (`examples/order_workflow_local.json`): no money moves,
    nothing is stored but the last idempotency keys, in memory. Needs no token, so an http node can
    call it; see `api/mock_payments.py` for why that is safe."""
    try:
        record, replayed = ledger.capture(payment, idempotency_key)
    except KeyReused:
        raise HTTPException(422, "this Idempotency-Key already captured a payment with another "
                                 "order_id, amount or currency; use a new key for a new payment") from None
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return record
