"""A member runs out of money and buys credits with Paystack (a fake Paystack server
speaking its API): the payment is credited once per reference, whether the member's
return or the webhook comes first, even with the webhook delivered twice at the same
moment; then their keys answer again, in both dialects."""

from __future__ import annotations

import threading

import anthropic
import openai
import pytest
from sqlalchemy import select

from extensions import db
from models import CreditTransaction, Member
from tests.conftest import chat
from tests.fake_paystack import SECRET_KEY, FakePaystack
from tests.members.conftest import member_key, new_member

SECRET = "sk-credits-aaaaaaaaaaaaaaa1111"
PRICE = {"input_per_mtok": "1000", "output_per_mtok": "1000"}  # 1000 µ$ per token
EMAIL = "pat@example.com"


@pytest.fixture
def paystack():
    with FakePaystack() as fake:
        yield fake


@pytest.fixture
def settings(settings, paystack):
    return {**settings, "PAYSTACK_SECRET": SECRET_KEY, "PAYSTACK_API_BASE": paystack.base_url}


@pytest.fixture
def member(app, admin, fake, browser):
    """A signed-in member with one key and $0.03 left; the upstream priced."""
    admin.add_key(SECRET, fake.base_url, name="main")
    assert admin.call("PUT", "/prices/gpt-4o-mini", PRICE).status == 200
    made = new_member(admin, EMAIL)
    with app.app_context():
        row = db.session.get(Member, made["id"])
        row.balance_micros, row.budget_micros, row.rpm_limit = 30_000, None, None
        db.session.commit()
    assert browser.log_in(EMAIL).status_code == 200
    return made["id"], member_key(app, made["id"])


def balance(app, member_id: int) -> int:
    with app.app_context():
        return db.session.get(Member, member_id).balance_micros


def credits_of(app, member_id: int) -> list[tuple[str, int, str]]:
    with app.app_context():
        rows = db.session.scalars(
            select(CreditTransaction).where(CreditTransaction.member_id == member_id)
        )
        return [(row.status, row.amount_micros, row.source) for row in rows]


def openai_call(server, key: str, **extra):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    return client.chat.completions.create(**chat(), max_tokens=5, **extra)


def anthropic_call(server, key: str):
    client = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)
    return client.messages.create(
        model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "Say hello"}]
    )


def buy(browser, amount: str):
    """The dashboard's form: POST /analytics/credits, not following the redirect."""
    browser.get("/analytics")
    return browser.post("/analytics/credits", {"amount": amount}, allow_redirects=False)


def test_out_of_money_buy_credits_once_and_call_again(app, server, paystack, member, browser):
    member_id, key = member
    assert openai_call(server, key).choices[0].message.content
    assert anthropic_call(server, key).content
    with pytest.raises(openai.RateLimitError) as refused:  # the $0.03 is used up
        for _ in range(5):
            openai_call(server, key)
    assert refused.value.body["code"] == "balance_exhausted"
    with pytest.raises(anthropic.RateLimitError):
        anthropic_call(server, key)
    left = balance(app, member_id)

    started = buy(browser, "5")
    assert started.status_code == 302
    page = started.headers["Location"]
    assert page.startswith(paystack.base_url)
    [sent] = [r for r in paystack.requests if r.path == "/transaction/initialize"]
    assert sent.body["amount"] == 500 and sent.body["email"] == EMAIL  # US cents
    assert sent.body["metadata"] == {"member_id": member_id}
    [reference] = paystack.transactions
    paystack.pay(reference)

    # The member comes back while Paystack delivers the webhook twice, all at once.
    answers, barrier = {}, threading.Barrier(3)

    def came_back():
        barrier.wait()
        answers["return"] = browser.session.get(
            f"{server.url}/analytics/credits/return?trxref={reference}&reference={reference}",
            allow_redirects=False, timeout=10,
        )  # fmt: skip

    def webhook(n: int):
        barrier.wait()
        url = f"{server.url}/api/webhooks/paystack"
        answers[n] = paystack.send_webhook(url, reference)[0]

    threads = [threading.Thread(target=came_back)]
    threads += [threading.Thread(target=webhook, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers["return"].status_code == 302
    assert answers["return"].headers["Location"].endswith("/analytics")
    assert answers[1].status == answers[2].status == 200
    assert balance(app, member_id) == left + 5_000_000  # once, not three times
    assert credits_of(app, member_id) == [("credited", 5_000_000, "paystack")]
    page = browser.get("/analytics").text
    assert "Payment received: $5.00 added to your balance." in page or (
        "This payment is already in your balance." in page
    )

    assert openai_call(server, key).choices[0].message.content
    assert anthropic_call(server, key).content
    again = browser.session.get(
        f"{server.url}/analytics/credits/return?reference={reference}", timeout=10
    )
    assert "This payment is already in your balance." in again.text
    assert credits_of(app, member_id) == [("credited", 5_000_000, "paystack")]


def test_following_paystacks_page_back_credits_and_says_so(app, paystack, member, browser):
    member_id, _ = member
    started = buy(browser, "2.50")
    landed = browser.session.get(started.headers["Location"], timeout=10)  # pays, comes back
    assert landed.url.endswith("/analytics")
    assert "Payment received: $2.50 added to your balance." in landed.text
    assert balance(app, member_id) == 30_000 + 2_500_000


def test_the_webhook_first_then_the_return_credits_once(app, server, paystack, member, browser):
    member_id, _ = member
    buy(browser, "1")
    [reference] = paystack.transactions
    paystack.pay(reference)
    url = f"{server.url}/api/webhooks/paystack"
    first, second = paystack.send_webhook(url, reference, times=2)
    assert first.json()["status"] == "credited" and first.json()["member_id"] == member_id
    assert second.json()["status"] == "duplicate"
    back = browser.session.get(f"{server.url}/analytics/credits/return?reference={reference}")
    assert "This payment is already in your balance." in back.text
    assert balance(app, member_id) == 30_000 + 1_000_000


@pytest.mark.parametrize(
    ("amount", "words"),
    [
        ("", "Enter the amount"),
        ("ten", "Enter the amount"),
        ("0", "more than $0"),
        ("-5", "more than $0"),
        ("20000", "at most $10,000"),
        ("NaN", "Enter the amount"),
    ],
)
def test_a_bad_amount_is_refused_readably(paystack, member, browser, amount, words):
    refused = buy(browser, amount)
    assert refused.status_code == 302 and refused.headers["Location"].endswith("/analytics")
    assert words in browser.get("/analytics").text
    assert paystack.requests == []  # Paystack never asked


def test_an_unpaid_or_foreign_payment_credits_nothing(app, server, paystack, member, browser):
    member_id, _ = member
    buy(browser, "1")
    [reference] = paystack.transactions
    back = browser.session.get(f"{server.url}/analytics/credits/return?reference={reference}")
    assert "The payment was not completed" in back.text  # not paid yet
    other = paystack.initialize(
        {"email": "x@example.com", "amount": 100, "metadata": {"member_id": member_id + 1}}
    )
    paystack.pay(other.reference)
    back = browser.session.get(f"{server.url}/analytics/credits/return?reference={other.reference}")
    assert "This payment was not made from your account." in back.text
    missing = browser.session.get(f"{server.url}/analytics/credits/return?reference=nope")
    assert "could not be checked" in missing.text
    assert balance(app, member_id) == 30_000 and credits_of(app, member_id) == []


def test_paystack_down_and_a_missing_csrf_token_are_readable(member, browser, paystack):
    paystack.close()  # Paystack cannot be reached
    refused = buy(browser, "5")
    assert refused.headers["Location"].endswith("/analytics")
    assert "Paystack cannot be reached" in browser.get("/analytics").text
    forged = browser.post("/analytics/credits", {"amount": "5"}, token=False)
    assert forged.status_code == 400 and "Reload the page" in forged.text


def test_only_a_signed_in_member_buys(server, admin, paystack):
    import requests

    anonymous = requests.post(f"{server.url}/analytics/credits", data={"amount": "5"},
                              allow_redirects=False, timeout=10)  # fmt: skip
    assert anonymous.status_code in (302, 401) and paystack.requests == []


def test_a_charge_for_a_member_who_is_gone_is_kept_unmatched(app, server, paystack, member):
    member_id, _ = member
    gone = paystack.initialize(
        {"email": "old@example.com", "amount": 300, "metadata": {"member_id": member_id + 50}}
    )
    paystack.pay(gone.reference)
    [answer] = paystack.send_webhook(f"{server.url}/api/webhooks/paystack", gone.reference)
    assert answer.status == 200 and answer.json()["status"] == "unmatched"  # not retried
    with app.app_context():
        row = db.session.scalar(
            select(CreditTransaction).where(CreditTransaction.reference == gone.reference)
        )
        assert (row.status, row.member_id, row.amount_micros) == ("unmatched", None, 3_000_000)
    assert balance(app, member_id) == 30_000
