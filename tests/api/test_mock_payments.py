"""api.mock_payments, the example workflow's mock payment route, on FastAPI's TestClient: what it
captures, what it refuses and why, its Idempotency-Key handling and its bounds. A run of the example
that calls it over HTTP is tests/api/workflows/test_local_example.py."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api import mock_payments
from api.mock_payments import MAX_BODY_BYTES, MockLedger, PaymentRequest

#: What the example's payment node sends: the run's variables and the verify step's result.
EXAMPLE_BODY = {"order_id": 123, "amount": 49.99, "currency": "EUR",
                "upstream": {"verify": {"verified": True, "order_id": 123}}}


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    app.include_router(mock_payments.router)
    return app


@pytest.fixture
def client(app) -> TestClient:
    with TestClient(app) as client:
        yield client


def pay(client: TestClient, body=EXAMPLE_BODY, key: str | None = "key-1", **kwargs):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/mock/payments", json=body, headers=headers, **kwargs)


def test_the_example_body_captures_a_mock_payment(client):
    response = pay(client)
    assert response.status_code == 201, response.text
    record = response.json()
    assert re.fullmatch(r"pay_[0-9a-f]{32}", record.pop("payment_id"))
    assert record == {"status": "captured", "order_id": 123, "amount": 49.99, "currency": "EUR",
                      "idempotency_key": "key-1", "mock": True}


def test_a_string_order_id_and_the_default_currency(client):
    response = pay(client, {"order_id": "A-17", "amount": 5})
    assert response.status_code == 201, response.text
    assert response.json()["order_id"] == "A-17" and response.json()["currency"] == "USD"
    assert response.json()["amount"] == 5


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"order_id": 123}, "amount", "Field required"),
    ({"order_id": 123, "amount": 0}, "amount", "greater than 0"),
    ({"order_id": 123, "amount": -5}, "amount", "greater than 0"),
    ({"order_id": 123, "amount": 2_000_000}, "amount", "less than or equal to 1000000"),
    ({"order_id": 123, "amount": "49.99"}, "amount", "valid number"),
    ({"order_id": 123, "amount": True}, "amount", "valid number"),
    ({"order_id": 123, "amount": 1.234}, "amount", "more than 2 decimals"),
    ({"amount": 10}, "order_id", "Field required"),
    ({"order_id": True, "amount": 10}, "order_id", "valid"),
    ({"order_id": "", "amount": 10}, "order_id", "at least 1 character"),
    ({"order_id": 1, "amount": 10, "currency": "eur"}, "currency", "pattern"),
])
def test_a_bad_body_is_a_422_that_names_the_field_and_why(client, body, field, reason):
    response = pay(client, body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(error["loc"][:2] == ["body", field] and reason in error["msg"] for error in errors), errors


def test_a_body_that_is_not_strict_json_is_a_422(client):
    response = client.post("/mock/payments", content=b'{"order_id": 1, "amount": NaN}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert "NaN is not JSON" in response.json()["detail"][0]["ctx"]["error"]


def test_a_body_over_the_limit_is_a_413_declared_or_streamed(client):
    big = b'{"order_id": 1, "amount": 1, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    declared = client.post("/mock/payments", content=big, headers={"Content-Type": "application/json"})
    streamed = client.post("/mock/payments", content=iter([big[:1000], big[1000:]]),
                           headers={"Content-Type": "application/json"})  # chunked: no Content-Length
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert str(MAX_BODY_BYTES) in response.json()["detail"]


def test_the_same_key_answers_the_same_payment_and_charges_once(client, app):
    first = pay(client, key="order-123")
    again = pay(client, key="order-123")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert len(app.state.mock_payment_ledger) == 1


def test_another_key_or_no_key_is_another_payment(client, app):
    ids = {pay(client, key="a").json()["payment_id"], pay(client, key="b").json()["payment_id"],
           pay(client, key=None).json()["payment_id"], pay(client, key=None).json()["payment_id"]}
    assert len(ids) == 4
    assert len(app.state.mock_payment_ledger) == 2  # keyless payments are not remembered


def test_a_key_reused_for_another_payment_is_a_422_and_keeps_the_first(client):
    first = pay(client, key="k")
    for changed in ({"amount": 50.0}, {"currency": "USD"}, {"order_id": "123"}):
        response = pay(client, {**EXAMPLE_BODY, **changed}, key="k")
        assert response.status_code == 422, (changed, response.text)
        assert "Idempotency-Key already captured" in response.json()["detail"]
    assert pay(client, key="k").json()["payment_id"] == first.json()["payment_id"]


def test_a_key_too_long_is_a_422(client):
    response = pay(client, key="k" * (mock_payments.MAX_KEY_CHARS + 1))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["header", "idempotency-key"]


def test_the_ledger_forgets_the_least_recently_used_key_past_its_capacity():
    ledger = MockLedger(capacity=3)
    payment = PaymentRequest(order_id=1, amount=1)
    first = {key: ledger.capture(payment, key)[0].payment_id for key in "abc"}
    ledger.capture(payment, "a")  # a replay makes "a" the most recently used
    ledger.capture(payment, "d")  # so "b" goes
    assert len(ledger) == 3
    for kept in "acd":
        record, replayed = ledger.capture(payment, kept)
        assert replayed and record.payment_id == first.get(kept, record.payment_id)
    record, replayed = ledger.capture(payment, "b")
    assert not replayed and record.payment_id != first["b"]
    assert len(ledger) == 3


def test_the_api_serves_it_without_a_token_and_says_it_is_a_mock():
    from api.main import create_app

    operation = create_app().openapi()["paths"]["/mock/payments"]["post"]
    assert "security" not in operation  # an http node sends no token
    for text in (operation["summary"], operation["description"], *operation["tags"]):
        assert "mock" in text.lower(), text
    assert "no money moves" in operation["summary"] and "no money moves" in operation["tags"][0]
