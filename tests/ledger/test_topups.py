"""Top-ups under concurrency (issue item 6): an admin's top-up is one UPDATE in SQL plus a
`credit_transactions` row, like a Paystack credit, so parallel top-ups and payments all
count; and the proxy uses the new budget at once."""

from __future__ import annotations

import json
import threading

import openai
import pytest
import urllib3
from sqlalchemy import select

from extensions import db
from models import AuditEntry, CreditTransaction
from tests.conftest import MASTER_KEY, chat
from tests.ledger.test_credits import PAYSTACK_SECRET, URL, charge, sign
from tests.limits.test_budgets import budget_key, priced, sdk  # noqa: F401 (a fixture)

PARALLEL = 20


@pytest.fixture
def settings(settings):
    settings["PAYSTACK_SECRET"] = PAYSTACK_SECRET
    return settings


def rows(app) -> list[CreditTransaction]:
    with app.app_context():
        found = list(db.session.scalars(select(CreditTransaction).order_by(CreditTransaction.id)))
        db.session.expunge_all()
        return found


def audits(app, action: str) -> list[AuditEntry]:
    with app.app_context():
        found = list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))
        db.session.expunge_all()
        return found


def max_budget(admin, key_id: int) -> str:
    return admin.call("GET", f"/client-keys/{key_id}").json()["max_budget"]


def all_at_once(calls) -> list:
    """Run the calls in threads released together; their results in order."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # reported below, not lost in a thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.fixture
def pool():
    """Enough connections for every thread to hold its own."""
    manager = urllib3.PoolManager(maxsize=PARALLEL * 2, retries=False)
    yield manager
    manager.clear()


def top_up(pool, server, key_id: int, amount: str = "1.00"):
    return lambda: pool.request(
        "POST",
        f"{server.url}/api/admin/client-keys/{key_id}/topup",
        json={"amount": amount},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )


def payment(pool, server, key_id: int, reference: str, cents: int = 100):
    raw = json.dumps(charge(reference, cents, key_id)).encode()
    headers = {"Content-Type": "application/json", "x-paystack-signature": sign(raw)}
    return lambda: pool.request("POST", f"{server.url}{URL}", body=raw, headers=headers)


@pytest.mark.both_databases
def test_parallel_top_ups_all_count(app, admin, server, pool):
    key = budget_key(admin, max_budget="1.00")
    answers = all_at_once([top_up(pool, server, key["id"]) for _ in range(PARALLEL)])
    assert [a.status for a in answers] == [200] * PARALLEL, [a.data for a in answers]
    assert max_budget(admin, key["id"]) == "21.000000"
    credits = rows(app)
    assert len(credits) == PARALLEL
    assert {(c.source, c.actor, c.status, c.client_key_id) for c in credits} == {
        ("admin", "master key", "credited", key["id"])
    }
    assert {(c.amount_micros, c.amount, c.currency, c.event) for c in credits} == {
        (1_000_000, 0, "USD", "admin.topup")
    }
    references = {c.reference for c in credits}
    assert len(references) == PARALLEL and all(r.startswith("admin-") for r in references)
    # Each audit row names its credit.
    logged = audits(app, "client_key.topup")
    assert {entry.detail["reference"] for entry in logged} == references


@pytest.mark.both_databases
def test_top_ups_racing_payments_add_up(app, admin, server, pool):
    """Ten admin top-ups of $1 and ten Paystack payments of 100 cents ($1), all at once."""
    key = budget_key(admin, max_budget="1.00")
    calls = []
    for n in range(PARALLEL // 2):
        calls += [top_up(pool, server, key["id"]), payment(pool, server, key["id"], f"ps-{n}")]
    answers = all_at_once(calls)
    assert [a.status for a in answers] == [200] * PARALLEL, [a.data for a in answers]
    assert max_budget(admin, key["id"]) == "21.000000"
    credits = rows(app)
    assert sorted(c.source for c in credits) == ["admin"] * 10 + ["paystack"] * 10
    assert sum(c.amount_micros for c in credits) == 20_000_000
    paid = [c for c in credits if c.source == "paystack"]
    assert {(c.amount, c.actor) for c in paid} == {(100, "paystack")}


def test_a_payment_still_gives_a_key_without_budget_one(app, admin, server, pool):
    key = budget_key(admin)  # no budget
    assert payment(pool, server, key["id"], "ps-first", cents=250)().status == 200
    assert max_budget(admin, key["id"]) == "2.500000"
    assert [(c.source, c.reference) for c in rows(app)] == [("paystack", "ps-first")]


def test_a_top_up_of_a_key_without_budget_writes_nothing(app, admin):
    key = budget_key(admin)
    answer = admin.call("POST", f"/client-keys/{key['id']}/topup", {"amount": "1"})
    # A conflict with the key as saved (no max_budget), not a bad request.
    assert answer.status == 409 and answer.json()["error"]["param"] == "amount"
    assert max_budget(admin, key["id"]) is None
    assert rows(app) == [] and audits(app, "client_key.topup") == []


@pytest.mark.both_databases
def test_dashboard_top_up_writes_a_credit_row(app, admin, web):
    key = budget_key(admin, max_budget="1.00")
    answer = web.post(f"/client-keys/{key['id']}/topup", {"amount": "0.5"})
    assert answer.status_code == 302
    assert max_budget(admin, key["id"]) == "1.500000"
    [credit] = rows(app)
    assert (credit.source, credit.actor, credit.amount_micros) == ("admin", "admin", 500_000)
    assert credit.reference.startswith("admin-") and credit.client_key_id == key["id"]
    [entry] = audits(app, "client_key.topup")
    assert entry.actor == "admin" and entry.detail["reference"] == credit.reference
    # A refused top-up writes nothing.
    assert web.post(f"/client-keys/{key['id']}/topup", {"amount": "lots"}).status_code == 422
    assert len(rows(app)) == 1


@pytest.mark.parametrize("via", ["api", "dashboard"])
def test_the_proxy_uses_a_top_up_at_once(admin, server, web, priced, via):  # noqa: F811
    """No waiting out the proxy's one-second cache of client keys."""
    key = budget_key(admin, max_budget="0.02")  # a request costs ~$0.008, reserves ~$0.013
    client = sdk(server, key["key"])
    with pytest.raises(openai.RateLimitError):
        for _ in range(5):
            client.chat.completions.create(**chat(), max_tokens=5)
    if via == "api":
        assert admin.call("POST", f"/client-keys/{key['id']}/topup", {"amount": "1"}).status == 200
    else:
        assert web.post(f"/client-keys/{key['id']}/topup", {"amount": "1"}).status_code == 302
    client.chat.completions.create(**chat(), max_tokens=5)  # at once, not a second later
