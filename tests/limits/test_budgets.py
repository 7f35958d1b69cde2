"""Client-key budgets (F31, F34): USD per period, reserved before the call and settled
after, shared by all workers; periods by arithmetic (the clock is moved, never slept)."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest

from app import create_app
from gateway.limits import budgets
from tests.conftest import LiveServer, chat
from tests.fake_upstream import Behaviour

SECRET = "sk-budget-aaaaaaaaaaaaaaaa1111"
# 1000 USD per million tokens = 1000 micro-dollars per token: costs are easy to predict.
PRICE = {"input_per_mtok": "1000", "output_per_mtok": "1000"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("duration", "now", "start", "end"),
    [
        (None, "2026-12-25 00:00", "2026-11-23 12:00", None),
        ("1h", "2026-11-23 14:30", "2026-11-23 14:00", "2026-11-23 15:00"),
        ("1d", "2026-11-25 11:59", "2026-11-24 12:00", "2026-11-25 12:00"),
        ("7d", "2026-12-01 12:00", "2026-11-30 12:00", "2026-12-07 12:00"),
        ("30d", "2026-12-23 12:00", "2026-12-23 12:00", "2027-01-22 12:00"),
        ("1mo", "2027-02-10 00:00", "2027-01-23 12:00", "2027-02-23 12:00"),
    ],
)
def test_periods_are_arithmetic(duration, now, start, end):
    anchor = at("2026-11-23 12:00")
    expected = (at(start), at(end) if end else None)
    assert budgets.period(anchor, duration, at(now)) == expected


def test_monthly_periods_clamp_to_the_month_end():
    anchor = at("2027-01-31 00:00")
    assert budgets.period(anchor, "1mo", at("2027-02-28 12:00")) == (
        at("2027-02-28 00:00"),
        at("2027-03-31 00:00"),
    )
    assert budgets.period(anchor, "1mo", at("2027-03-30 12:00"))[0] == at("2027-02-28 00:00")


def test_amounts_are_exact_micro_dollars():
    assert budgets.parse_usd("max_budget", "10.00") == 10_000_000
    assert budgets.parse_usd("max_budget", 0.5) == 500_000
    for bad in ("0.0000001", "abc", "-1", True):
        with pytest.raises(ValueError):
            budgets.parse_usd("max_budget", bad)


@pytest.fixture
def priced(admin, fake):
    admin.add_key(SECRET, fake.base_url, name="main")
    assert admin.call("PUT", "/prices/gpt-4o-mini", PRICE).status == 200


def budget_key(admin, **fields) -> dict:
    body = {"name": "app", "rpm_limit": None, "tpm_limit": None, **fields}
    response = admin.call("POST", "/client-keys", body)
    assert response.status == 201, response.data
    return response.json()


def sdk(server, key):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def spend(admin, key_id: int) -> int:
    logs = [log for log in admin.logs(limit=500) if log["client_key_id"] == key_id]
    return sum(int(log["cost_usd"].replace(".", "")) for log in logs)


def test_budget_refuses_before_it_is_passed_and_top_up_reopens(admin, server, priced, clock):
    created = budget_key(admin, max_budget="0.05", budget_duration="1h")
    assert created["max_budget"] == "0.050000" and created["budget_duration"] == "1h"
    client = sdk(server, created["key"])
    served = 0
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(20):
            client.chat.completions.create(**chat(), max_tokens=5)
            served += 1
    assert served >= 2
    assert spend(admin, created["id"]) <= 50_000  # never past the budget
    error = refused.value
    assert (error.body["type"], error.body["code"]) == ("insufficient_quota", "budget_exceeded")
    assert "of $0.050000" in error.body["message"]
    assert error.response.headers["Retry-After"] == "3600"  # the hour starts at 12:00
    topped = admin.call("POST", f"/client-keys/{created['id']}/topup", {"amount": "0.05"})
    assert topped.json()["max_budget"] == "0.100000"
    client.chat.completions.create(**chat(), max_tokens=5)
    clock.advance(hours=1)  # a new period: spend starts from zero again
    for _ in range(served):
        client.chat.completions.create(**chat(), max_tokens=5)


@pytest.fixture
def patient(settings):
    """A read timeout that an answer held at the fake (hold()) stays within, on any load."""
    settings.update(READ_TIMEOUT=60.0, REQUEST_DEADLINE=120.0)


@pytest.mark.both_databases
def test_twenty_parallel_requests_with_one_requests_budget_left(
    patient, admin, server, priced, fake
):
    """F34: reservations stop the other 19; the spend stays within the budget."""
    # The admitted request is held at the upstream until the other 19 are answered: with a
    # fixed delay, a loaded machine could finish it before the last ones were admitted.
    fake.set_behaviour(SECRET, Behaviour.slow(0.0))
    # A request costs 8k, reserves 13k and needs at least 9k (its prompt and one answer
    # token): after the first, 21k are left: one reservation of 13k, not one more of 9k.
    created = budget_key(admin, max_budget="0.029")
    client = sdk(server, created["key"])
    client.chat.completions.create(**chat(), max_tokens=5)  # leaves room for one more
    outcomes, barrier = [], threading.Barrier(20)

    def one() -> None:
        barrier.wait()
        try:
            client.chat.completions.create(**chat(), max_tokens=5)
            outcomes.append("ok")
        except openai.RateLimitError as exc:
            outcomes.append(exc.body["code"])

    threads = [threading.Thread(target=one) for _ in range(20)]
    fake.hold()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(outcomes) < 19 and time.monotonic() < deadline:
        time.sleep(0.01)  # polls the other threads' answers, not a wait for time to pass
    fake.let_go()
    for thread in threads:
        thread.join(30)
    assert outcomes.count("ok") == 1 and outcomes.count("budget_exceeded") == 19
    assert spend(admin, created["id"]) <= 29_000


@pytest.mark.both_databases
def test_spend_survives_a_restart_without_the_shared_file(settings, admin, server, priced):
    # A request costs 8 tokens x 1000, reserves ~13 x 1000 and needs at least its prompt and
    # one answer token (9 x 1000): two fit in $0.024, not three.
    created = budget_key(admin, max_budget="0.024")
    client = sdk(server, created["key"])
    client.chat.completions.create(**chat(), max_tokens=5)
    client.chat.completions.create(**chat(), max_tokens=5)
    spent = spend(admin, created["id"])
    server.app.extensions["keyrelay"].books.flush()
    instance = server.app.instance_path
    (Path(instance) / "limits.bin").unlink()
    again = create_app(settings)  # a new process: the spend comes from the request log
    live = LiveServer(again)
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            sdk(live, created["key"]).chat.completions.create(**chat(), max_tokens=5)
        assert f"${spent / 1_000_000:.6f}" in refused.value.body["message"]
    finally:
        live.close()
        again.extensions["keyrelay"].close()


def test_budget_fields_and_top_up_errors(admin):
    plain = budget_key(admin)
    assert plain["max_budget"] is None
    no_budget = admin.call("POST", f"/client-keys/{plain['id']}/topup", {"amount": "1"})
    assert no_budget.status == 409 and "no budget" in no_budget.json()["error"]["message"]
    for body, param in (
        ({"name": "x", "max_budget": "ten"}, "max_budget"),
        ({"name": "x", "budget_duration": "2w"}, "budget_duration"),
    ):
        answer = admin.call("POST", "/client-keys", body)
        assert answer.status == 400 and answer.json()["error"]["param"] == param
    budgeted = budget_key(admin, max_budget="1")
    bad = admin.call("POST", f"/client-keys/{budgeted['id']}/topup", {"amount": "-3"})
    assert bad.status == 400 and bad.json()["error"]["param"] == "amount"


def test_dashboard_budget_bar_and_top_up(web, admin, server, priced):
    page = web.post(
        "/client-keys",
        {
            "name": "b",
            "profile": "default",
            "models": "*",
            "max_budget": "0.05",
            "budget_duration": "1d",
            "rpm_limit": "",
            "tpm_limit": "",
        },
        follow_redirects=True,  # the new key is shown once, after the redirect
    ).text
    key = re.search(r'id="new-key-value" value="(kr-[^"]+)"', page).group(1)
    sdk(server, key).chat.completions.create(**chat(), max_tokens=5)
    listing = web.get("/client-keys").text
    assert 'data-spent="8000"' in listing and "$0.008 / $0.05" in listing
    assert "per 1d, resets Tue 24 Nov 12:00" in listing
    assert web.post("/client-keys/1/topup", {"amount": "0.5"}).status_code == 302
    assert admin.call("GET", "/client-keys/1").json()["max_budget"] == "0.550000"
    assert web.post("/client-keys/1/topup", {"amount": "lots"}).status_code == 422


def test_overview_shows_budget_bars_from_the_shared_counters(web, admin, server, priced):
    created = budget_key(admin, max_budget="0.05", budget_duration="30d")
    sdk(server, created["key"]).chat.completions.create(**chat(), max_tokens=5)
    bars = web.get("/partials/budget-bars").text
    assert 'data-client-key-id="1"' in bars and 'data-spent="8000"' in bars
    assert "$0.008 / $0.05" in bars  # below a cent: the digits that matter
    assert "resets Wed 23 Dec 12:00 (in 30 d)" in bars  # in the zone, and how far off
    overview = web.get("/").text
    assert "Client-key budgets" in overview and 'hx-get="/partials/budget-bars"' in overview
    admin.call("POST", f"/client-keys/{created['id']}/revoke")
    assert 'data-client-key-id="1"' not in web.get("/partials/budget-bars").text
