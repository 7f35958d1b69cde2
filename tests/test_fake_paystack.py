"""The fake Paystack (tests/fake_paystack.py) answers as Paystack's API does, and its signed
`charge.success` is one KeyRelay's real webhook accepts, delivered twice, credited once."""

from __future__ import annotations

import json

import pytest

from gateway.ledger import credits
from tests.fake_paystack import SECRET_KEY, FakePaystack, sign
from tests.limits.test_budgets import budget_key

AUTH = {"Authorization": f"Bearer {SECRET_KEY}"}


@pytest.fixture
def paystack():
    with FakePaystack() as fake:
        yield fake


@pytest.fixture
def settings(settings, paystack):
    settings["PAYSTACK_SECRET"] = SECRET_KEY
    settings["PAYSTACK_API_BASE"] = paystack.base_url
    return settings


def initialize(http, paystack, headers=AUTH, **body):
    return http.request(
        "POST", f"{paystack.base_url}/transaction/initialize", json=body, headers=headers
    )


def verify(http, paystack, reference, headers=AUTH):
    return http.request(
        "GET", f"{paystack.base_url}/transaction/verify/{reference}", headers=headers
    )


def test_initialize_checkout_and_verify(http, paystack):
    started = initialize(
        http,
        paystack,
        email="ada@example.com",
        amount="500",
        callback_url="http://127.0.0.1:1/analytics/credits/callback",
        metadata={"member_id": 7},
    )
    assert started.status == 200
    answer = started.json()
    assert (answer["status"], answer["message"]) == (True, "Authorization URL created")
    data = answer["data"]
    assert set(data) == {"authorization_url", "access_code", "reference"}
    assert data["authorization_url"].endswith(f"/checkout/{data['access_code']}")
    unpaid = verify(http, paystack, data["reference"]).json()["data"]
    assert (unpaid["status"], unpaid["paid_at"]) == ("abandoned", None)

    paid = http.request("GET", data["authorization_url"], redirect=False)
    assert paid.status == 302
    assert paid.headers["Location"] == (
        "http://127.0.0.1:1/analytics/credits/callback"
        f"?trxref={data['reference']}&reference={data['reference']}"
    )
    checked = verify(http, paystack, data["reference"]).json()
    assert (checked["status"], checked["message"]) == (True, "Verification successful")
    assert checked["data"]["status"] == "success"
    assert checked["data"]["amount"] == 500
    assert checked["data"]["metadata"] == {"member_id": 7}
    assert checked["data"]["customer"]["email"] == "ada@example.com"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"email": "not-an-email", "amount": 500}, 400, "Invalid Email Address Passed"),
        ({"email": "ada@example.com", "amount": 0}, 400, "Invalid Amount Sent"),
        ({"email": "ada@example.com", "amount": "5.00"}, 400, "Invalid Amount Sent"),
        ({"email": "ada@example.com"}, 400, "Invalid Amount Sent"),
    ],
    ids=["bad email", "zero amount", "decimal amount", "no amount"],
)
def test_initialize_refuses_bad_input(http, paystack, body, status, message):
    answer = initialize(http, paystack, **body)
    assert (answer.status, answer.json()) == (status, {"status": False, "message": message})
    assert paystack.transactions == {}


def test_a_wrong_key_an_unknown_and_a_repeated_reference_are_refused(http, paystack):
    wrong = {"Authorization": "Bearer sk_test_someone_else"}
    assert initialize(http, paystack, wrong, email="a@example.com", amount=1).status == 401
    assert verify(http, paystack, "T1", headers={}).status == 401
    missing = verify(http, paystack, "T-nothing")
    assert (missing.status, missing.json()["message"]) == (400, "Transaction reference not found")
    assert initialize(http, paystack, email="a@example.com", amount=1, reference="R1").status == 200
    again = initialize(http, paystack, email="a@example.com", amount=1, reference="R1")
    assert (again.status, again.json()["message"]) == (400, "Duplicate Transaction Reference")


def test_the_signed_webhook_twice_credits_keyrelay_once(server, http, admin, paystack):
    key = budget_key(admin, max_budget="1")
    body = {"email": "ops@example.com", "amount": 250, "metadata": {"client_key_id": key["id"]}}
    reference = initialize(http, paystack, **body).json()["data"]["reference"]
    paystack.pay(reference)
    raw = paystack.event(reference)
    assert credits.verify(SECRET_KEY, raw, sign(raw))  # KeyRelay's check of the signature
    assert json.loads(raw)["event"] == "charge.success"

    first, second = paystack.send_webhook(f"{server.url}/api/webhooks/paystack", reference, 2)

    assert (first.status, first.json()["status"]) == (200, "credited")
    assert (second.status, second.json()) == (200, {"status": "duplicate", "reference": reference})
    # 250 US cents on top of $1.
    assert admin.call("GET", f"/client-keys/{key['id']}").json()["max_budget"] == "3.500000"
