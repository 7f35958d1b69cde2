"""The dashboard says what is: a key past its limit shows how far past (204 %, not 100 %),
recent failures show request ids that tell the requests apart, every page says which zone
its times are in, and RovoDev's sync times are in that zone like every other time. Real
traffic through the proxy (the OpenAI SDK over loopback) against the fake upstreams."""

from __future__ import annotations

import html
import re

import openai
import pytest

from tests.conftest import chat
from tests.fake_rovodev import Account, FakeRovoDev
from tests.fake_upstream import Behaviour
from tests.members.conftest import PASSWORD, Browser, member_key, new_member
from tests.test_dashboard_fit import NOT_PAGES, pages

SECRET = "sk-truth-aaaaaaaaaaaa1111"
ROVO_TOKEN = "ATATT3xFfGF0truth-token-aaaaaaaaaaaa"


@pytest.fixture
def settings(settings):
    settings["TIMEZONE"] = "Europe/Berlin"  # the clock's 12:00 UTC is 13:00 there
    return settings


def _text(page: str) -> str:
    """The page's text as read: tags gone, spaces collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_a_key_past_its_daily_limit_shows_the_true_percentage(admin, fake, client, web):
    admin.add_key(SECRET, fake.base_url, name="capped", daily_token_limit=4)
    client.chat.completions.create(**chat())  # 8 tokens on a limit of 4: 200 %
    keys = web.get("/keys").text
    row = re.search(r'<tbody id="key-1".*?</tbody>', keys, re.S).group(0)
    assert "(200.0%)" in _text(row) and "over the limit" in _text(row)
    assert re.search(r'<meter [^>]*max="4"[^>]*value="4"', row)  # the bar itself stops full
    bars = web.get("/partials/key-bars").text
    assert "(200.0%)" in _text(bars) and "over the limit" in _text(bars)


def test_recent_failures_show_request_ids_that_differ(admin, fake, client, web):
    admin.add_key(SECRET, fake.base_url, name="failing")
    fake.set_behaviour(SECRET, Behaviour.server_error(500))
    for _ in range(3):
        with pytest.raises(Exception):  # noqa: B017 - any SDK error: the request failed
            client.chat.completions.create(**chat())
    ids = [row["request_id"] for row in admin.logs()]
    page = web.get("/partials/errors").text
    shown = re.findall(r'<a href="/requests/([^"]+)"><code[^>]*>([^<]+)</code>', page)
    assert len(shown) == 3 and {link for link, _ in shown} == set(ids)
    texts = [text.strip() for _, text in shown]
    assert len(set(texts)) == 3, texts  # three requests, three different ids on screen
    assert all(text in ids for text in texts), texts  # each as it is, to search for


def test_every_page_says_the_zone_its_times_are_in(app, server, admin, fake, client, web):
    admin.add_key(SECRET, fake.base_url, name="main")
    client.chat.completions.create(**chat())
    member = new_member(admin, "mia@example.com")
    key = member_key(app, member["id"])
    mine = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    mine.chat.completions.create(**chat())
    request_id = admin.logs()[0]["request_id"]
    route = admin.call("POST", "/routes", {"name": "smart", "target": "gpt-4o-mini"}).json()
    ids = {
        "key_id": 1,
        "route_id": route["id"],
        "member_id": member["id"],
        "request_id": request_id,
        "portal.request_detail": {"request_id": request_id},
    }
    listed = pages(app, ids)
    person = Browser(server.url)
    person.log_in("mia@example.com", PASSWORD)
    read = {url: web.client.get(url, follow_redirects=True).text for url in listed["admin"]}
    read |= {url: person.get(url).text for url in listed["member"]}
    person.close()
    assert len(listed["admin"]) >= 18 and listed["member"] and "static" in NOT_PAGES
    assert [url for url, page in read.items() if "Times in Europe/Berlin." not in page] == []
    # One way of writing a time: `13:00` today, `Tue 24 Nov 13:00` another day. Not a full
    # stamp with seconds, not ISO 8601 with its T or offset, not another zone.
    other_styles = re.compile(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d|[+-]\d\d:\d\d\b|UTC"
    )
    written = {url: other_styles.findall(_text(page)) for url, page in read.items()}
    assert {url: found for url, found in written.items() if found} == {}


def test_rovodev_sync_times_are_in_the_configured_zone(admin, web, clock):
    with FakeRovoDev({ROVO_TOKEN: Account("dev@example.com")}) as rovo:
        body = {"email": "dev@example.com", "apiToken": ROVO_TOKEN, "baseUrl": rovo.base_url}
        assert admin.call("POST", "/rovodev-keys", {**body, "test": False}).status == 201
        assert admin.call("POST", "/rovodev-keys/sync", {}).status == 200
        page = _text(web.get("/rovodev").text)
    # The clock's 12:00 UTC is 13:00 in Berlin: the page says 13:00, as its note says.
    assert re.search(r"synced 13:00 \( ?just now ?\)", page), page[-1500:]
    assert "12:00" not in page
    assert "Times in Europe/Berlin." in page
