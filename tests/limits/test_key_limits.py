"""Provider-key limits (F30, F32): RPM/TPM windows per key and per model, daily and monthly
tokens, daily / monthly / total cost, expiry, `limit_reached`, and a profile's option to
wait for a key. Days and months follow KEYRELAY_TIMEZONE. The clock moves; nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import openai
import pytest

from extensions import db
from gateway import periods
from models import UsageDaily
from tests.conftest import MASTER_KEY, Admin, chat, live_app
from tests.fake_upstream import Behaviour

KEY_A = "sk-limit-a-aaaaaaaaaaaaaaaa1111"
KEY_B = "sk-limit-b-bbbbbbbbbbbbbbbb2222"
# 1000 USD per million tokens = 1000 micro-dollars a token: costs are easy to predict.
PRICE = {"input_per_mtok": "1000", "output_per_mtok": "1000"}
LONG = "a prompt that is long enough to use a good number of tokens here"


def served(fake, secret: str) -> int:
    return sum(1 for r in fake.requests_for(secret) if r.path.endswith("/chat/completions"))


def test_limits_are_set_shown_and_checked(admin, fake):
    key = admin.add_key(
        KEY_A,
        fake.base_url,
        rpm_limit=60,
        tpm_limit=90000,
        monthly_token_limit=5_000_000,
        model_limits={"gpt-4o": {"rpm": 5}},
        daily_cost_limit="1.50",
        monthly_cost_limit=20,
        total_cost_limit="100",
        expires_at="2027-01-01T00:00:00+01:00",
    )
    assert key["rpm_limit"] == 60 and key["tpm_limit"] == 90000
    assert key["model_limits"] == {"gpt-4o": {"rpm": 5}}
    assert (key["daily_cost_limit"], key["monthly_cost_limit"], key["total_cost_limit"]) == (
        "1.500000",
        "20.000000",
        "100.000000",
    )
    assert key["expires_at"] == "2026-12-31T23:00:00+00:00"  # stored in UTC
    assert key["status"] == "active" and key["cost_today"] == "0.000000"
    changed = admin.call("PUT", f"/keys/{key['id']}", {"rpm_limit": None}).json()
    assert changed["rpm_limit"] is None and changed["tpm_limit"] == 90000  # only what was given
    for field, value in [
        ("rpm_limit", 0),
        ("tpm_limit", "many"),
        ("daily_cost_limit", "abc"),
        ("monthly_cost_limit", "0"),
        ("model_limits", {"gpt-4o": {"rph": 1}}),
        ("model_limits", ["gpt-4o"]),
        ("expires_at", "next week"),
        ("expires_at", "2027-01-01T00:00:00"),  # no zone
    ]:
        response = admin.call("PUT", f"/keys/{key['id']}", {field: value})
        assert response.status == 400, (field, value)
        assert response.json()["error"]["param"] == field.split(".")[0]
    assert admin.key(key["id"])["tpm_limit"] == 90000  # a refused change changed nothing


def test_a_key_at_its_rpm_is_passed_over_without_penalty(admin, fake, client, clock):
    limited = admin.add_key(KEY_A, fake.base_url, name="a", rpm_limit=2)
    admin.add_key(KEY_B, fake.base_url, name="b")
    for _ in range(6):
        raw = client.chat.completions.with_raw_response.create(**chat())
        assert raw.headers["x-keyrelay-attempts"] == "1"  # a skipped key is no attempt
    assert (served(fake, KEY_A), served(fake, KEY_B)) == (2, 4)
    after = admin.key(limited["id"])
    assert after["status"] == "active" and after["consecutive_failures"] == 0
    clock.advance(seconds=61)  # the window slid past both requests
    for _ in range(4):
        client.chat.completions.create(**chat())
    assert served(fake, KEY_A) == 4


def test_the_only_key_at_its_rpm_answers_429_with_retry_after(admin, fake, client, clock):
    admin.add_key(KEY_A, fake.base_url, rpm_limit=1)
    client.chat.completions.create(**chat())
    clock.advance(seconds=20)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**chat())
    assert err.value.code == "provider_keys_at_limit"
    assert err.value.response.headers["Retry-After"] == "40"
    assert served(fake, KEY_A) == 1
    clock.advance(seconds=40)
    client.chat.completions.create(**chat())
    assert served(fake, KEY_A) == 2


def test_tpm_and_per_model_windows(admin, fake, client, clock):
    admin.add_key(KEY_A, fake.base_url, tpm_limit=20, model_limits={"gpt-4o": {"rpm": 1}})
    client.chat.completions.create(**chat(model="gpt-4o", content="hi"))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**chat(model="gpt-4o", content="hi"))  # model window
    client.chat.completions.create(**chat(model="gpt-4o-mini", content=LONG))  # key's TPM ok
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**chat(model="gpt-4o-mini"))  # now over 20 tokens
    assert "tokens-per-minute" in err.value.message
    clock.advance(seconds=60)
    client.chat.completions.create(**chat(model="gpt-4o-mini"))
    client.chat.completions.create(**chat(model="gpt-4o"))


def test_a_profile_may_wait_for_a_key_instead_of_failing(admin, fake, client, clock):
    key = admin.add_key(KEY_A, fake.base_url, rpm_limit=1)
    settings = admin.call("PUT", "/profiles/default", {"wait_for_key_seconds": 30})
    assert settings.status == 200 and settings.json()["wait_for_key_seconds"] == 30
    client.chat.completions.create(**chat())
    clock.advance(seconds=45)  # the window has room again in 15 s: within the 30 s
    client.chat.completions.create(**chat())
    assert clock.slept == [15.0] and served(fake, KEY_A) == 2
    # Room only in 60 s, more than the 30 s allowed: fail at once, no wait.
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**chat())
    assert clock.slept == [15.0]
    # A cooling-down key (upstream 429 with Retry-After) is waited for too.
    admin.call("PUT", f"/keys/{key['id']}", {"rpm_limit": None})
    fake.script(KEY_A, [Behaviour.rate_limited(retry_after=10)])
    client.chat.completions.create(**chat())
    assert clock.slept == [15.0, 10.0] and served(fake, KEY_A) == 4
    bad = admin.call("PUT", "/profiles/default", {"wait_for_key_seconds": 601})
    assert bad.status == 400 and bad.json()["error"]["param"] == "wait_for_key_seconds"


@pytest.mark.both_databases
def test_monthly_token_limit_lasts_until_the_first(admin, fake, client, clock):
    clock.current = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    key = admin.add_key(KEY_A, fake.base_url, monthly_token_limit=20)
    client.chat.completions.create(**chat(content=LONG))
    clock.advance(days=1)  # a new day, same month: still out
    shown = admin.key(key["id"])
    assert (shown["status"], shown["limit_reached"]) == ("limit_reached", "monthly token limit")
    assert shown["available_at"] == "2026-12-01T00:00:00+00:00"
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(**chat())
    assert err.value.status_code == 503 and "monthly token limit" in err.value.message
    clock.advance(days=1)  # December
    assert admin.key(key["id"])["status"] == "active"
    client.chat.completions.create(**chat())


@pytest.mark.both_databases
def test_cost_limits_send_requests_elsewhere(admin, fake, client, clock):
    assert admin.call("PUT", "/prices/gpt-4o-mini", PRICE).status == 200
    daily = admin.add_key(KEY_A, fake.base_url, name="a", daily_cost_limit="0.01")
    total = admin.add_key(KEY_B, fake.base_url, name="b", total_cost_limit="0.02")
    for _ in range(2):
        client.chat.completions.create(**chat(content=LONG))
    # 23 tokens a request = $0.023: each key is over its limit after one request, and the
    # second request went to the other key.
    assert (served(fake, KEY_A), served(fake, KEY_B)) == (1, 1)
    a, b = admin.key(daily["id"]), admin.key(total["id"])
    assert (a["status"], a["limit_reached"]) == ("limit_reached", "daily cost limit")
    assert (b["status"], b["limit_reached"]) == ("limit_reached", "total cost limit")
    assert b["available_at"] is None  # only an admin brings it back
    before = served(fake, KEY_A) + served(fake, KEY_B)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(**chat())
    assert err.value.status_code == 503
    assert served(fake, KEY_A) + served(fake, KEY_B) == before  # never reached the upstream
    clock.advance(days=40)
    assert admin.key(daily["id"])["status"] == "active"
    assert admin.key(total["id"])["status"] == "limit_reached"
    raised = admin.call("PUT", f"/keys/{total['id']}", {"total_cost_limit": "5"}).json()
    assert raised["status"] == "active"


@pytest.mark.both_databases
def test_cost_figures_and_seed_statistics(admin, fake, client):
    assert admin.call("PUT", "/prices/gpt-4o-mini", PRICE).status == 200
    key = admin.add_key(KEY_A, fake.base_url, daily_cost_limit="10", monthly_cost_limit="100")
    admin.add_key(KEY_B, fake.base_url, daily_cost_limit="20", models=["gpt-4o"])
    completion = client.chat.completions.create(**chat(content="hi"))
    cost = completion.usage.total_tokens * 1000  # micro-dollars
    shown = admin.key(key["id"])
    assert shown["cost_today"] == shown["cost_month"] == f"{cost / 1e6:.6f}"
    stats = admin.call("GET", "/keys/statistics").json()
    assert (stats["dailyLimit"], stats["monthlyLimit"]) == ("30.000000", "100.000000")
    assert stats["dailyBudgetUsed"] == round(100 * cost / 30_000_000, 2)


def test_an_expired_key_leaves_the_pool(admin, fake, client, clock):
    soon = (clock.now() + timedelta(hours=1)).isoformat()
    key = admin.add_key(KEY_A, fake.base_url, expires_at=soon)
    client.chat.completions.create(**chat())
    clock.advance(hours=2)
    assert admin.key(key["id"])["status"] == "expired"
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(**chat())
    assert err.value.status_code == 503 and "expired" in err.value.message
    later = (clock.now() + timedelta(days=30)).isoformat()
    assert admin.call("PUT", f"/keys/{key['id']}", {"expires_at": later}).json()["status"] == (
        "active"
    )
    client.chat.completions.create(**chat())


@pytest.fixture
def tokyo(settings, fake):
    """A gateway whose days run on Tokyo time (UTC+9); its clock reads 21:00 there."""
    with live_app(settings, TIMEZONE="Asia/Tokyo") as served:
        yield served
    periods.configure("UTC")  # the zone is process-wide; the next app sets its own anyway


def test_daily_limits_reset_at_midnight_in_the_configured_zone(tokyo, fake, http, clock):
    app, live = tokyo
    admin = Admin(live.url, http)
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=MASTER_KEY, max_retries=0)
    key = admin.add_key(KEY_A, fake.base_url, daily_token_limit=10)
    client.chat.completions.create(**chat(content=LONG))
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(**chat())
    assert "reset at 00:00 Asia/Tokyo" in err.value.message
    assert err.value.response.headers["Retry-After"] == str(3 * 3600)  # 15:00 UTC
    clock.advance(hours=2, minutes=59)  # 23:59 in Tokyo, still the 23rd there
    assert admin.key(key["id"])["status"] == "limit_reached"
    clock.advance(minutes=1)  # 00:00 in Tokyo; 15:00 UTC, the same UTC day
    assert admin.key(key["id"])["status"] == "active"
    client.chat.completions.create(**chat())
    app.extensions["keyrelay"].books.flush()
    with app.app_context():
        days = sorted({str(row.day) for row in db.session.scalars(db.select(UsageDaily))})
    assert days == ["2026-11-23", "2026-11-24"]  # usage days are Tokyo days
    client.close()
