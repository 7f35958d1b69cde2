"""Key states say why and until when (issue 13, items 3–5, 7): which limit, when it comes
back in KEYRELAY_TIMEZONE, who disabled it, the upstream's message without its JSON, every
binding limit tightest first; money and counts for humans. Real traffic through the proxy
(the OpenAI SDK over loopback) against the fake upstream."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import openai
import pytest
from sqlalchemy import select

from extensions import db
from models import AuditEntry
from tests.conftest import chat
from tests.fake_upstream import Behaviour

pytestmark = pytest.mark.both_databases

SECRET = "sk-state-aaaaaaaaaaaa1111"
OTHER = "sk-state-bbbbbbbbbbbb2222"


@pytest.fixture
def settings(settings):
    settings["TIMEZONE"] = "Europe/Berlin"  # the clock's 12:00 UTC is 13:00 there
    settings["FAILURE_THRESHOLD"] = 2
    return settings


def _row(page: str, key_id: int) -> str:
    """The key's row on the keys page, entities decoded."""
    found = re.search(rf'<tbody id="key-{key_id}".*?</tr>', page, re.S)
    return html.unescape(found.group(0))


def test_a_limit_reached_key_names_the_limit_and_when_it_is_back_in_the_zone(
    admin, fake, client, web
):
    admin.add_key(SECRET, fake.base_url, name="capped", daily_token_limit=5)
    client.chat.completions.create(**chat())  # 8 tokens: the limit is reached
    row = _row(web.get("/keys").text, 1)
    assert 'class="badge limit_reached"' in row
    # Next local midnight in Berlin is 23:00 UTC, 11 hours after the clock's 12:00 UTC.
    assert re.search(r"Daily token limit reached: \d+ tokens of 5 tokens", row)
    assert "serves again at Tue 24 Nov 00:00, when the day resets." in row
    assert "back in 11 h" in row
    assert "Times in Europe/Berlin." in web.get("/keys").text
    key = admin.key(1)
    assert key["limit_reached"] == "daily token limit"
    assert key["status_reason"].endswith(
        "serves again at Tue 24 Nov 00:00 Europe/Berlin, when the day resets."
    )


def test_auto_disabled_and_admin_disabled_keys_read_differently(admin, fake, client, web):
    admin.add_key(SECRET, fake.base_url, name="flaky")
    admin.add_key(OTHER, fake.base_url, name="parked")
    fake.set_behaviour(SECRET, Behaviour.server_error(500))
    fake.set_behaviour(OTHER, Behaviour.server_error(500))
    web.post("/keys/2/toggle")  # an admin parks key 2 first
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(**chat())
    page = web.get("/keys").text
    auto, parked = _row(page, 1), _row(page, 2)
    assert ">auto-disabled</span>" in auto
    assert "Disabled automatically after 2 failures in a row at 13:00; last: HTTP 500: " in auto
    assert "The server had an error while processing your request" in auto
    assert '{"error"' not in auto  # the upstream's message, not its JSON
    assert ">disabled</span>" in parked and "Disabled by admin at 13:00. Enable" in parked
    assert (admin.key(1)["disabled_by"], admin.key(2)["disabled_by"]) == ("system", "admin")
    listed = web.get("/keys?state=auto_disabled").text
    assert 'id="key-1"' in listed and 'id="key-2"' not in listed


def test_a_stale_error_is_cleared_when_the_key_answers(admin, fake, client, web, clock):
    admin.add_key(SECRET, fake.base_url)
    fake.set_behaviour(SECRET, Behaviour.rate_limited(retry_after=30))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**chat())
    row = _row(web.get("/keys").text, 1)
    assert "Rate limited by the upstream; tried again at 13:00:30." in row
    assert "The upstream said: HTTP 429: Rate limit reached for requests" in row
    assert "back in 30 s" in row
    clock.advance(seconds=31)
    fake.set_behaviour(SECRET, None)
    client.chat.completions.create(**chat())
    assert admin.key(1)["last_error"] is None and admin.key(1)["status_reason"] is None
    row = _row(web.get("/keys").text, 1)
    assert 'class="badge active"' in row and "data-reason" not in row


def test_every_binding_limit_is_shown_tightest_first(admin, fake, client, web):
    expires = (datetime(2026, 11, 23, 12, tzinfo=UTC) + timedelta(days=3)).isoformat()
    limits = {
        "daily_cost_limit": "5",
        "monthly_token_limit": 10_000_000,
        "rpm_limit": 2,
        "tpm_limit": 100_000,
        "expires_at": expires,
    }
    admin.add_key(SECRET, fake.base_url, **limits)
    client.chat.completions.create(**chat())
    row = _row(web.get("/keys").text, 1)
    # RPM 1 of 2 (50%) binds most: it has the meter; the others follow, tightest first.
    assert re.search(r'<meter [^>]*max="2"[^>]*data-limit="RPM"', row)
    listed = re.findall(r'<li data-limit="([^"]+)">([^<]+)</li>', row)
    # The rest are all near 0 %: in their fixed order, and the expiry last.
    assert [label for label, _ in listed] == [
        "monthly token limit",
        "daily cost limit",
        "TPM",
        "expiry",
    ]
    text = dict(listed)
    # A cost below a cent keeps the digits that matter; the limit has cents.
    assert re.fullmatch(
        r"daily cost limit: \$0\.0000\d+ / \$5\.00 \(0\.0%\)", text["daily cost limit"]
    )
    assert text["monthly token limit"].endswith("/ 10,000,000 tokens (0.0%)")
    assert text["expiry"] == "expires Thu 26 Nov 13:00 (in 3 d)"
    assert "no limit" not in row


def test_a_dead_key_without_a_limit_does_not_lift_the_profile_ceiling(admin, fake, web):
    admin.add_key(SECRET, fake.base_url, daily_token_limit=1000)
    admin.add_key(OTHER, fake.base_url, name="dead")  # no limit, then disabled
    web.post("/keys/2/toggle")
    bars = web.get("/partials/profile-bars").text
    assert re.search(r'data-profile="default".*?<meter min="0" max="1000"', bars, re.S)
    assert "no daily token limit" not in bars


def test_auth_failure_from_traffic_is_explained_and_audited_as_system(admin, fake, client, web):
    admin.add_key(SECRET, fake.base_url)
    fake.set_behaviour(SECRET, Behaviour.unauthorized())
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(**chat())
    row = _row(web.get("/keys").text, 1)
    assert "The upstream refused the key at 13:00: HTTP 401: Incorrect API key provided" in row
    assert SECRET not in row
    with web.client.application.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "key.auth_failed"))
        assert (entry.actor, entry.target) == ("system", "key:1")
        assert entry.detail["error"].startswith("HTTP 401: Incorrect API key provided")


def test_upstream_messages_are_taken_out_of_their_json():
    from gateway.keys.messages import upstream_message

    whole = 'HTTP 429: {"error": {"message": "Slow down", "type": "requests"}}'
    assert upstream_message(whole) == "HTTP 429: Slow down"
    cut = 'HTTP 400: {"error": {"message": "This model\\u0027s maximum context is 8192 tok'
    assert upstream_message(cut) == "HTTP 400: This model's maximum context is 8192 tok…"
    assert upstream_message('HTTP 500: {"detail": "boom"}') == "HTTP 500: boom"
    assert upstream_message("HTTP 502: <html>Bad gateway</html>") == (
        "HTTP 502: <html>Bad gateway</html>"
    )
    assert upstream_message("connection refused") == "connection refused"
    assert upstream_message(None) is None


def test_money_counts_and_times_for_people(app, clock):
    from blueprints import formatting

    usd = formatting.usd
    assert (usd(4_065_429), usd(797_515), usd(800_000), usd(16_888_130)) == (
        "$4.07",
        "$0.80",
        "$0.80",
        "$16.89",
    )
    assert (usd(0), usd(4_200), usd(1), usd(1_234_560_000)) == (
        "$0.00",
        "$0.0042",
        "$0.000001",
        "$1,234.56",
    )
    assert formatting.per_mtok("2.5") == "$2.50 / 1M tokens"
    assert formatting.per_mtok("0.075") == "$0.075 / 1M tokens"
    assert (
        str(formatting.tokens(12_345_678)) == '<abbr class="count" title="12,345,678">12.3M</abbr>'
    )
    assert str(formatting.tokens(9_999)) == "9,999"
    with app.test_request_context():
        now = clock.now()
        assert formatting.relative(now + timedelta(minutes=12)) == "in 12 min"
        assert formatting.relative(now - timedelta(hours=3)) == "3 h ago"
        # 12:00 UTC is 13:00 in Berlin: times are written in the configured zone, one way.
        assert formatting.when(now) == "13:00"
        assert formatting.when(now + timedelta(days=1)) == "Tue 24 Nov 13:00"


def test_chromium_shows_the_limit_and_its_reset_in_the_zone(admin, fake, client, server):
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import FLAGS, ensure_chromium, screenshot
    from tests.conftest import ADMIN_PASSWORD

    admin.add_key(SECRET, fake.base_url, name="capped", daily_token_limit=5)
    client.chat.completions.create(**chat())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=ensure_chromium(), args=FLAGS)
        page = browser.new_page(base_url=server.url, viewport={"width": 1440, "height": 900})
        page.set_default_timeout(10_000)
        page.goto("/login")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        # The keys page says it in the state cell; the overview's key card in a line under
        # the key's row (the card's columns are narrow).
        for path, row in (("/keys", "#key-1 td.state"), ("/", '#key-bars [data-key-id="1"]')):
            page.goto(path)
            state = page.locator(row)
            expect(state.first).to_contain_text("limit reached")
            expect(state.first).to_contain_text("back in 11 h")
            expect(state.last).to_contain_text("Daily token limit reached: 8 tokens of 5 tokens")
            expect(state.last).to_contain_text("serves again at Tue 24 Nov 00:00")
            expect(page.locator(".zone-note")).to_have_text("Times in Europe/Berlin.")
        screenshot(page, "overview-limit-reached")
        browser.close()


def test_a_key_the_gateway_took_out_says_when_it_is_re_tested(admin, fake, client, web):
    from gateway.jobs import scheduler

    admin.add_key(SECRET, fake.base_url)
    fake.set_behaviour(SECRET, Behaviour.unauthorized())
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(**chat())
    row = _row(web.get("/keys").text, 1)
    assert "No automatic re-test: the scheduler or its re-validation is off." in row
    app = web.client.application
    app.config.update(SCHEDULER=True, REVALIDATE_MINUTES=15)  # what the page reads
    outcome = scheduler.run_job(app, "key-revalidation")  # still refused: stays out
    assert outcome["result"]["still_failing"]
    row = _row(web.get("/keys").text, 1)
    assert "Next automatic re-test: 13:15." in row
