"""A member's money in the proxy: their balance, their budget per period and their
requests per minute hold over all their keys together, exactly under concurrency, with the
file limiter and with Redis; a refusal says which limit and until when."""

from __future__ import annotations

import threading
from datetime import timedelta

import anthropic
import openai
import pytest
from sqlalchemy import event

from extensions import db
from models import Member
from tests.conftest import chat
from tests.fake_upstream import Behaviour
from tests.members.conftest import member_key, new_member
from tests.redis_server import RedisServer

SECRET = "sk-money-aaaaaaaaaaaaaaaa1111"
# 1000 USD per million tokens = 1000 micro-dollars per token: costs are easy to predict.
PRICE = {"input_per_mtok": "1000", "output_per_mtok": "1000"}
LONG = " ".join(["word"] * 2000)  # an upstream that answers 2,000 tokens whatever is asked


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(params=["file", "redis"])
def settings(settings, request):
    """Each test with the limiter in a shared file, and again with Redis."""
    extra = {"READ_TIMEOUT": 20.0, "CONNECT_TIMEOUT": 20.0, "REQUEST_DEADLINE": 60.0}
    if request.param == "redis":
        extra["REDIS_URL"] = request.getfixturevalue("redis_server").url
    return {**settings, **extra}


@pytest.fixture
def priced(admin, fake):
    admin.add_key(SECRET, fake.base_url, name="main")
    assert admin.call("PUT", "/prices/gpt-4o-mini", PRICE).status == 200
    fake.set_behaviour(SECRET, Behaviour.ok(content=LONG))


def set_money(app, member_id: int, **values) -> None:
    with app.app_context():
        member = db.session.get(Member, member_id)
        for name, value in values.items():
            setattr(member, name, value)
        db.session.commit()


def balance(app, member_id: int) -> int:
    with app.app_context():
        return db.session.get(Member, member_id).balance_micros


def spend(admin, key_ids: set[int]) -> int:
    logs = [log for log in admin.logs(limit=500) if log["client_key_id"] in key_ids]
    return sum(int(log["cost_usd"].replace(".", "")) for log in logs)


def key_id(server, key: str) -> int:
    return server.app.extensions["keyrelay"].callers.resolve(key).client_key_id


def sdk(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def fifty_streams(server, keys: list[str]) -> tuple[list, list]:
    """50 streams at once, alternating over the keys: (finish reasons, refusal codes)."""
    finishes, refusals, barrier = [], [], threading.Barrier(50)

    def one(key: str) -> None:
        barrier.wait()
        try:
            stream = sdk(server, key).chat.completions.create(**chat(), stream=True)
            reasons = [c.choices[0].finish_reason for c in stream if c.choices]
            finishes.append([r for r in reasons if r])
        except openai.APIStatusError as exc:
            refusals.append(exc.body["code"])

    threads = [threading.Thread(target=one, args=(keys[i % 2],)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(finishes) + len(refusals) == 50
    return finishes, refusals


def test_fifty_streams_over_two_keys_spend_the_balance_and_not_more(app, admin, server, priced):
    made = new_member(admin)
    set_money(app, made["id"], balance_micros=10_000, budget_micros=None, rpm_limit=None,
              tpm_limit=None)  # fmt: skip
    keys = [member_key(app, made["id"], "one"), member_key(app, made["id"], "two")]
    finishes, refusals = fifty_streams(server, keys)
    assert finishes and all(reasons == ["length"] for reasons in finishes)
    assert set(refusals) <= {"balance_exhausted"}
    server.app.extensions["keyrelay"].books.flush()
    spent = spend(admin, {key_id(server, key) for key in keys})
    print(f"spent {spent / 100:.1f} % of the balance")  # noqa: T201 - the figure
    assert 0 < spent <= 10_000
    assert balance(app, made["id"]) == 10_000 - spent  # booked off the balance, exactly
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(server, keys[0]).chat.completions.create(**chat(), max_tokens=5)
    assert refused.value.body["code"] == "balance_exhausted"
    assert "balance is used up" in refused.value.body["message"]
    assert "until you add credits" in refused.value.body["message"]
    assert "retry-after" not in refused.value.response.headers
    with pytest.raises(anthropic.RateLimitError) as refused:  # Anthropic-shaped on /v1/messages
        anthropic.Anthropic(base_url=server.url, api_key=keys[1], max_retries=0).messages.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
        )
    assert refused.value.body["type"] == "error"
    assert "balance is used up" in refused.value.body["error"]["message"]


def test_the_budget_holds_over_both_keys_until_its_period_ends(app, admin, server, priced, clock):
    made = new_member(admin)
    set_money(app, made["id"], balance_micros=10**9, budget_micros=10_000, budget_period="1d",
              rpm_limit=None, tpm_limit=None)  # fmt: skip
    keys = [member_key(app, made["id"], "one"), member_key(app, made["id"], "two")]
    finishes, refusals = fifty_streams(server, keys)
    assert finishes and set(refusals) <= {"budget_exceeded"}
    server.app.extensions["keyrelay"].books.flush()
    spent = spend(admin, {key_id(server, key) for key in keys})
    print(f"spent {spent / 100:.1f} % of the budget")  # noqa: T201 - the figure
    assert 0 < spent <= 10_000
    with app.app_context():
        created = db.session.get(Member, made["id"]).created_at
    ends = created + timedelta(days=1)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(server, keys[1]).chat.completions.create(**chat(), max_tokens=5)
    body = refused.value.body
    assert body["code"] == "budget_exceeded" and "budget is used up" in body["message"]
    assert f"until {ends.strftime('%Y-%m-%dT%H:%M:%SZ')} (UTC)" in body["message"]
    wait = int(refused.value.response.headers["retry-after"])
    assert wait == int((ends - clock.now()).total_seconds())
    clock.advance(days=1)  # the next period: spend starts again from nothing
    answer = sdk(server, keys[0]).chat.completions.create(**chat(), max_tokens=5)
    assert answer.choices[0].message.content


def test_an_rpm_of_5_counts_both_keys_together(app, admin, server, priced, clock):
    made = new_member(admin)
    set_money(
        app, made["id"], balance_micros=10**9, rpm_limit=5, tpm_limit=None, budget_micros=None
    )
    keys = [member_key(app, made["id"], "one"), member_key(app, made["id"], "two")]
    for n in range(5):
        sdk(server, keys[n % 2]).chat.completions.create(**chat(), max_tokens=5)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(server, keys[1]).chat.completions.create(**chat(), max_tokens=5)
    body = refused.value.body
    assert body["code"] == "rate_limit_exceeded"
    assert "5 requests per minute over all your API keys" in body["message"]
    wait = int(refused.value.response.headers["retry-after"])
    until = clock.now() + timedelta(seconds=wait)
    assert f"until {until.strftime('%Y-%m-%dT%H:%M:%SZ')} (UTC)" in body["message"]
    clock.advance(seconds=61)
    sdk(server, keys[1]).chat.completions.create(**chat(), max_tokens=5)  # a new minute


def test_a_journal_replayed_after_a_kill_takes_the_cost_off_the_balance_once(app, admin):
    """A process killed before its writer committed: the journal line another process
    replays charges the member, and a second replay charges nothing more."""
    from gateway.ledger import journal
    from gateway.ledger.accounting import RequestRecord, Usage

    gateway = app.extensions["keyrelay"]
    made = new_member(admin)
    set_money(app, made["id"], balance_micros=1_000_000)
    key = member_key(app, made["id"])
    rec = RequestRecord(gateway.clock.now(), "chat.completions", "gpt-4o-mini", False, 1)
    rec.client_key_id, rec.status_code, rec.usage = key_id_of(app, key), 200, Usage(3, 4)
    rec.request_id, rec.cost_micros = "req_killed", 7_000
    entry = gateway.books.entry(rec.log_row(), [], rec.usage_row(), None)
    gateway.books.journal_dir.mkdir(parents=True, exist_ok=True)
    (gateway.books.journal_dir / "4242-deadbeef.journal").write_bytes(journal.encode(entry))
    assert gateway.books.recover() == 1
    assert balance(app, made["id"]) == 1_000_000 - 7_000
    assert spent(app, made["id"]) == 7_000
    (gateway.books.journal_dir / "4243-deadbeef.journal").write_bytes(journal.encode(entry))
    assert gateway.books.recover() == 0  # already in the log: not charged twice
    assert balance(app, made["id"]) == 1_000_000 - 7_000
    assert spent(app, made["id"]) == 7_000


def spent(app, member_id: int) -> int:
    with app.app_context():
        return db.session.get(Member, member_id).spent_micros


@pytest.mark.both_databases
def test_admitting_a_member_reads_their_row_not_a_sum_over_their_request_log(
    app, admin, server, priced
):
    """The member's running total moves with their balance as requests are booked, and
    admission reads the two from the member's row: its cost does not grow with their
    history (it once summed every request their keys ever made, on every request)."""
    made = new_member(admin)
    set_money(app, made["id"], balance_micros=10**9, budget_micros=None, rpm_limit=None,
              tpm_limit=None)  # fmt: skip
    keys = [member_key(app, made["id"], "one"), member_key(app, made["id"], "two")]
    statements: list[str] = []
    engine = server.app.extensions["keyrelay"].engine

    def seen(conn, cursor, statement, *args) -> None:
        statements.append(statement.lower())

    event.listen(engine, "before_cursor_execute", seen)
    try:
        for n in range(4):
            sdk(server, keys[n % 2]).chat.completions.create(**chat(), max_tokens=5)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    server.app.extensions["keyrelay"].books.flush()
    cost = spend(admin, {key_id(server, key) for key in keys})
    assert cost > 0
    assert spent(app, made["id"]) == cost
    assert balance(app, made["id"]) == 10**9 - cost
    assert any("from members" in sql for sql in statements)  # the listener saw admission
    assert not [sql for sql in statements if "request_logs" in sql]


def key_id_of(app, key: str) -> int:
    return app.extensions["keyrelay"].callers.resolve(key).client_key_id


def test_a_tpm_limit_counts_the_tokens_of_both_keys(app, admin, server, priced, clock):
    made = new_member(admin)
    set_money(app, made["id"], balance_micros=10**9, rpm_limit=None, tpm_limit=20,
              budget_micros=None)  # fmt: skip
    keys = [member_key(app, made["id"], "one"), member_key(app, made["id"], "two")]
    first = sdk(server, keys[0]).chat.completions.create(**chat(), max_tokens=15)
    assert first.usage.total_tokens > 20  # the window is full after one request
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(server, keys[1]).chat.completions.create(**chat(), max_tokens=5)
    assert "20 tokens per minute over all your API keys" in refused.value.body["message"]
    clock.advance(seconds=61)
    sdk(server, keys[1]).chat.completions.create(**chat(), max_tokens=5)


def test_a_model_without_a_price_is_refused_to_a_member(app, admin, server, priced, fake):
    made = new_member(admin)
    key = member_key(app, made["id"])
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(server, key).chat.completions.create(**chat(model="house-model-x"), max_tokens=5)
    assert refused.value.body["code"] == "model_price_unknown"
    assert "prepaid balance" in refused.value.body["message"]
    assert fake.requests_for(SECRET) == []
