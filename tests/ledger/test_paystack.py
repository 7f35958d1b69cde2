"""gateway/ledger/paystack.py against the fake Paystack over real HTTP: start a payment, pay it,
verify it; Paystack's refusals and its absence are readable errors."""

from __future__ import annotations

import socket

import pytest

from gateway.ledger.paystack import Paystack, PaystackError
from tests.fake_paystack import SECRET_KEY, FakePaystack

CALLBACK = "http://127.0.0.1:1/analytics/credits/callback"


@pytest.fixture
def fake():
    with FakePaystack() as paystack:
        yield paystack


@pytest.fixture
def client(fake):
    return Paystack(fake.base_url, SECRET_KEY)


def test_a_payment_is_started_paid_and_verified(client, fake):
    checkout = client.initialize("ada@example.com", 500, CALLBACK, {"member_id": 7})
    assert checkout.authorization_url == f"{fake.base_url}/checkout/{checkout.access_code}"
    [sent] = [r for r in fake.requests if r.path == "/transaction/initialize"]
    assert sent.body == {
        "email": "ada@example.com",
        "amount": 500,
        "callback_url": CALLBACK,
        "metadata": {"member_id": 7},
    }
    assert sent.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert not client.verify(checkout.reference).paid
    fake.pay(checkout.reference)
    paid = client.verify(checkout.reference)
    assert paid.paid
    assert (paid.reference, paid.amount, paid.currency) == (checkout.reference, 500, "USD")
    assert (paid.email, paid.metadata) == ("ada@example.com", {"member_id": 7})


def test_refusals_carry_paystacks_message(client, fake):
    with pytest.raises(PaystackError, match="^Paystack refused: Invalid Amount Sent.$"):
        client.initialize("ada@example.com", 0, CALLBACK)
    with pytest.raises(PaystackError, match="^Paystack refused: Transaction reference not found.$"):
        client.verify("T-nothing/../x")
    with pytest.raises(PaystackError, match="^Paystack refused: Invalid key.$"):
        Paystack(fake.base_url, "sk_test_wrong").initialize("ada@example.com", 5, CALLBACK)


def test_paystack_out_of_reach_is_a_readable_error():
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        client = Paystack(f"http://127.0.0.1:{closed.getsockname()[1]}", SECRET_KEY)
        with pytest.raises(PaystackError, match="cannot be reached"):
            client.verify("T1")


def test_the_client_follows_the_settings():
    assert Paystack.from_config({"PAYSTACK_SECRET": None}) is None
    default = Paystack.from_config({"PAYSTACK_SECRET": SECRET_KEY, "PAYSTACK_API_BASE": None})
    assert default.api_base == "https://api.paystack.co"
    fake = Paystack.from_config(
        {"PAYSTACK_SECRET": SECRET_KEY, "PAYSTACK_API_BASE": "http://127.0.0.1:9/"}
    )
    assert fake.api_base == "http://127.0.0.1:9"
