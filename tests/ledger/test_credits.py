"""Credits (F35): Paystack's signed `charge.success` raises a client key's budget, once per
transaction reference. Deliveries go over real HTTP, signed with HMAC-SHA512 over the raw
body exactly as Paystack signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading

import openai
import pytest
from sqlalchemy import select

from extensions import db
from models import AuditEntry, CreditTransaction
from tests.conftest import chat
from tests.limits.test_budgets import PRICE, SECRET, budget_key, sdk

PAYSTACK_SECRET = "sk_test_0123456789abcdef0123456789abcdef01234567"
URL = "/api/webhooks/paystack"


@pytest.fixture
def settings(settings):
    settings["PAYSTACK_SECRET"] = PAYSTACK_SECRET
    return settings


@pytest.fixture
def priced(admin, fake):
    admin.add_key(SECRET, fake.base_url, name="main")
    assert admin.call("PUT", "/prices/gpt-4o-mini", PRICE).status == 200


def charge(reference: str, amount: int, client_key_id=None, **data) -> dict:
    """A Paystack `charge.success` event (the fields Paystack sends, trimmed)."""
    metadata = {} if client_key_id is None else {"client_key_id": client_key_id}
    return {
        "event": "charge.success",
        "data": {
            "id": 4099260516,
            "domain": "test",
            "status": "success",
            "reference": reference,
            "amount": amount,
            "currency": "USD",
            "paid_at": "2026-11-23T12:00:00.000Z",
            "channel": "card",
            "metadata": metadata,
            "customer": {"id": 84312, "email": "ops@example.com"},
            **data,
        },
    }


def sign(raw: bytes, secret: str = PAYSTACK_SECRET) -> str:
    return hmac.new(secret.encode(), raw, hashlib.sha512).hexdigest()


def deliver(server, http, event, signature: str | None = None):
    """POST the event as Paystack does; signed with the secret unless a signature is given."""
    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {"Content-Type": "application/json"}
    headers["x-paystack-signature"] = sign(raw) if signature is None else signature
    return http.request("POST", f"{server.url}{URL}", body=raw, headers=headers)


def max_budget(admin, key_id: int) -> str | None:
    return admin.call("GET", f"/client-keys/{key_id}").json()["max_budget"]


def transactions(app) -> list[CreditTransaction]:
    with app.app_context():
        rows = list(db.session.scalars(select(CreditTransaction).order_by(CreditTransaction.id)))
        db.session.expunge_all()
        return rows


@pytest.mark.both_databases
def test_a_payment_reopens_a_key_its_budget_refused(app, server, http, admin, priced):
    # Less than one request's prompt (8 tokens at $0.001), so nothing can be answered.
    created = budget_key(admin, name="prepaid", max_budget="0.007")
    client = sdk(server, created["key"])
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat(), max_tokens=5)
    assert refused.value.body["code"] == "budget_exceeded"

    answer = deliver(server, http, charge("T685312322670591", 10, created["id"]))

    assert answer.status == 200, answer.data
    assert answer.json() == {
        "status": "credited",
        "reference": "T685312322670591",
        "client_key_id": created["id"],
        "credited": "0.100000",  # 10 US cents x 10000 micro-dollars
    }
    assert max_budget(admin, created["id"]) == "0.107000"
    reply = client.chat.completions.create(**chat(), max_tokens=5)  # at once, no cache wait
    assert reply.choices[0].message.content
    [row] = transactions(app)
    assert (row.reference, row.client_key_id, row.status) == ("T685312322670591", 1, "credited")
    assert (row.amount, row.currency, row.amount_micros, row.event) == (
        10,
        "USD",
        100_000,
        "charge.success",
    )
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.actor == "paystack"))
        assert (entry.action, entry.target) == ("client_key.credit", f"client_key:{created['id']}")
        assert entry.detail["reference"] == "T685312322670591"
        assert entry.detail["amount"] == "0.100000"


@pytest.mark.both_databases
def test_a_replayed_delivery_credits_once(app, server, http, admin):
    created = budget_key(admin, max_budget="1")
    event = charge("T-replay-1", 250, created["id"])
    first = deliver(server, http, event)
    again = deliver(server, http, event)  # Paystack retries; an attacker may replay

    assert first.json()["status"] == "credited"
    assert again.status == 200  # anything else and Paystack would retry for 72 hours
    assert again.json() == {"status": "duplicate", "reference": "T-replay-1"}
    assert max_budget(admin, created["id"]) == "3.500000"
    assert len(transactions(app)) == 1


@pytest.mark.both_databases
def test_simultaneous_deliveries_of_one_charge_credit_once(app, server, http, admin):
    created = budget_key(admin, max_budget="1")
    event = charge("T-race-1", 100, created["id"])
    barrier, answers = threading.Barrier(6), []

    def one() -> None:
        barrier.wait()
        answers.append(deliver(server, http, event))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert [a.status for a in answers] == [200] * 6, [a.data for a in answers]
    assert sorted(a.json()["status"] for a in answers) == ["credited"] + ["duplicate"] * 5
    assert max_budget(admin, created["id"]) == "2.000000"


def test_the_signature_is_over_the_exact_raw_body(server, http, admin):
    created = budget_key(admin, max_budget="1")
    # Paystack's own formatting: what matters is the bytes, not the JSON they hold.
    raw = (
        '{ "event":"charge.success",\n  "data": {"reference": "T-raw-1", "amount": 50, '
        f'"currency": "USD", "metadata": {{"client_key_id": {created["id"]}}}}}}}\n'
    ).encode()
    assert json.dumps(json.loads(raw)).encode() != raw

    assert deliver(server, http, raw).json()["status"] == "credited"
    assert max_budget(admin, created["id"]) == "1.500000"


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(sign(b"{}"), id="another body"),
        pytest.param("wrong", id="garbage"),
        pytest.param("", id="missing"),
        pytest.param(None, id="another secret"),
    ],
)
def test_a_bad_signature_is_refused_and_credits_nothing(app, server, http, admin, signature):
    created = budget_key(admin, max_budget="1")
    raw = json.dumps(charge("T-forged", 1_000_000, created["id"])).encode()
    if signature is None:
        signature = sign(raw, secret="sk_test_someone_else")
    headers = {"Content-Type": "application/json"}
    if signature:
        headers["x-paystack-signature"] = signature

    answer = http.request("POST", f"{server.url}{URL}", body=raw, headers=headers)

    assert answer.status == 401
    assert answer.json()["error"]["code"] == "invalid_signature"
    assert max_budget(admin, created["id"]) == "1.000000"
    assert transactions(app) == []


def test_without_a_secret_the_webhook_is_unavailable(app, server, http, admin):
    app.config["PAYSTACK_SECRET"] = None  # as when KEYRELAY_PAYSTACK_SECRET is unset
    created = budget_key(admin, max_budget="1")

    answer = deliver(server, http, charge("T-unset", 100, created["id"]))

    assert answer.status == 503
    error = answer.json()["error"]
    assert (
        error["code"] == "payments_not_configured"
        and "KEYRELAY_PAYSTACK_SECRET" in (error["message"])
    )
    assert max_budget(admin, created["id"]) == "1.000000"


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "'event'"),
        ({"data": {}}, "'event'"),
        ({"event": "charge.success"}, "'data'"),
        (charge("", 100, 1), "reference"),
        (charge("T-bad-amount", "100", 1), "amount"),
        (charge("T-zero", 0, 1), "amount"),
        (charge("T-huge", 2**62, 1), "more than $1,000,000,000"),
        (charge("T-no-currency", 100, 1, currency=None), "currency"),
        (charge("T-bad-key", 100, "abc"), "client_key_id"),
    ],
)
def test_a_malformed_event_is_a_400(app, server, http, admin, event, words):
    budget_key(admin, max_budget="1")

    answer = deliver(server, http, event)

    assert answer.status == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_payload" and words in error["message"]
    assert transactions(app) == []


def test_deliveries_with_nothing_to_credit_are_acknowledged(app, server, http, admin):
    created = budget_key(admin, max_budget="1")
    transfer = {"event": "transfer.success", "data": {"reference": "TRF-1", "amount": 100}}
    not_ours = charge("T-shop-order", 100)  # another product on the same Paystack account

    assert deliver(server, http, transfer).json() == {"status": "ignored"}
    assert deliver(server, http, not_ours).json() == {
        "status": "ignored",
        "reference": "T-shop-order",
    }
    assert max_budget(admin, created["id"]) == "1.000000"
    assert transactions(app) == []


@pytest.mark.both_databases
def test_a_charge_for_an_unknown_key_is_kept_unmatched_not_retried(app, server, http, admin):
    event = charge("T-orphan", 100, 999)

    first, again = deliver(server, http, event), deliver(server, http, event)

    assert first.status == again.status == 200
    assert first.json() == {"status": "unmatched", "reference": "T-orphan", "client_key_id": 999}
    assert again.json()["status"] == "duplicate"
    [row] = transactions(app)
    assert (row.status, row.client_key_id, row.amount_micros) == ("unmatched", None, 1_000_000)
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.actor == "paystack"))
        assert (entry.action, entry.target) == ("credit.unmatched", "client_key:999")


def test_metadata_as_a_string_and_a_key_without_a_budget(app, server, http, admin):
    created = budget_key(admin, name="unlimited")
    assert created["max_budget"] is None
    metadata = json.dumps({"client_key": str(created["id"])})  # as some Paystack clients send

    answer = deliver(server, http, charge("T-str-meta", 500, metadata=metadata))

    assert answer.json()["status"] == "credited"
    assert max_budget(admin, created["id"]) == "5.000000"  # the credit becomes its budget


@pytest.mark.both_databases
def test_deleting_a_credited_key_keeps_its_payments(app, server, http, admin):
    created = budget_key(admin, max_budget="1")
    deliver(server, http, charge("T-keep", 100, created["id"]))

    assert admin.call("DELETE", f"/client-keys/{created['id']}").status == 204

    [row] = transactions(app)
    assert (row.reference, row.status, row.client_key_id) == ("T-keep", "credited", None)
