"""Pool operations (issue 13, item 9): test all keys with response times, restore invalid
keys, batch enable/disable/test/delete, key search and state filter, failure counts."""

from __future__ import annotations

import html
import re

import openai
import pytest

from tests.conftest import chat
from tests.fake_upstream import Behaviour

pytestmark = pytest.mark.both_databases

GOOD, BAD, BUSY = "sk-pool-aaaaaaaaaaaa1111", "sk-pool-bbbbbbbbbbbb2222", "sk-pool-cccccccccccc3333"


def _pool(admin, fake):
    admin.add_key(GOOD, fake.base_url, name="good")
    admin.add_key(BAD, fake.base_url, name="bad", profile="team")
    admin.add_key(BUSY, fake.base_url, name="busy")
    fake.set_behaviour(BAD, Behaviour.unauthorized())
    fake.set_behaviour(BUSY, Behaviour.rate_limited())


def _results(page: str) -> dict[int, tuple[str, str]]:
    rows = re.findall(
        r'<tr data-key-id="(\d+)" data-result="(\w+)">.*?<td class="num">([^<]*)</td>', page, re.S
    )
    return {int(key_id): (result, took) for key_id, result, took in rows}


def test_test_all_keys_reports_each_result_and_response_time(web, fake, admin):
    _pool(admin, fake)
    page = html.unescape(web.post("/keys/test-all").text)
    assert "Tested 3 keys: 1 passed, 2 failed" in page
    results = _results(page)
    assert {k: r for k, (r, _) in results.items()} == {
        1: "ok",
        2: "auth_failed",
        3: "rate_limited",
    }
    assert all(re.fullmatch(r"\d+ ms", took) for _, took in results.values())
    assert "HTTP 401: Incorrect API key provided" in page and BAD not in page
    assert admin.key(2)["status"] == "auth_failed"


def test_restore_invalid_keys_brings_back_those_that_answer(web, fake, admin):
    _pool(admin, fake)
    web.post("/keys/test-all")  # key 2 is now auth_failed
    fake.set_behaviour(BAD, None)  # the provider accepts it again
    page = html.unescape(web.post("/keys/restore").text)
    assert "Re-tested 1 invalid keys: 1 back in the pool, 0 still failing" in page
    assert admin.key(2)["status"] == "active" and admin.key(2)["disabled_by"] is None
    again = html.unescape(web.post("/keys/restore").text)
    assert "No auth-failed or automatically disabled key to re-test." in again


def test_batch_actions_on_selected_keys(web, fake, admin):
    _pool(admin, fake)
    web.post("/keys/batch", {"action": "disable", "ids": ["1"]})  # key 1's row is rewritten
    done = web.post("/keys/batch", {"action": "disable", "ids": ["3", "1"]}, follow_redirects=True)
    assert "Disabled 2 keys: #1, #3." in html.unescape(done.text)  # in id order on PostgreSQL too
    assert [admin.key(i)["status"] for i in (1, 2, 3)] == ["disabled", "active", "disabled"]
    assert admin.key(1)["disabled_by"] == "admin"
    web.post("/keys/batch", {"action": "enable", "ids": ["1", "3"]})
    assert admin.key(3)["status"] == "active"
    refused = web.post("/keys/batch", {"action": "delete", "ids": ["3"]}, follow_redirects=True)
    assert "Tick “yes, delete them”" in refused.text and admin.key(3)["id"] == 3
    web.post("/keys/batch", {"action": "delete", "ids": ["2", "3"], "confirm": "yes"})
    assert [k["id"] for k in admin.call("GET", "/keys").json()["data"]] == [1]
    tested = html.unescape(web.post("/keys/batch", {"action": "test", "ids": ["1"]}).text)
    assert "Tested 1 selected keys: 1 passed" in tested
    assert web.post("/keys/batch", {"action": "explode", "ids": ["1"]}).status_code == 422
    none = web.post("/keys/batch", {"action": "enable"}, follow_redirects=True)
    assert "Select at least one key first." in none.text


def test_search_and_state_filter_and_failure_counts(web, fake, admin, client):
    _pool(admin, fake)
    web.post("/keys/test-all")
    shown = lambda **q: re.findall(r'<tbody id="key-(\d+)"', web.get("/keys", query_string=q).text)  # noqa: E731
    assert shown(q="bad") == ["2"] and shown(q="…3333") == ["3"]
    assert shown(state="auth_failed") == ["2"] and shown(profile="team") == ["2"]
    assert shown(state="active", q="good") == ["1"]
    assert "1 of 3 keys" in web.get("/keys?q=busy").text
    fake.set_behaviour(GOOD, Behaviour.server_error(500))
    fake.set_behaviour(BUSY, Behaviour.server_error(500))
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(**chat())
    page = web.get("/keys").text
    failures = re.findall(r'<tbody id="key-(\d+)".*?data-failures="(\d+)"', page, re.S)
    assert failures == [("1", "1"), ("2", "0"), ("3", "1")]  # both tried keys failed once


def test_a_passing_test_never_ends_a_cooldown_the_upstream_asked_for(web, fake, admin, client):
    """A quota-exhausted key answers its model list; its test passes, and it stays cooling
    down (with the upstream's reason) until the time the upstream gave."""
    admin.add_key(GOOD, fake.base_url, name="quota")
    fake.script(GOOD, [Behaviour.rate_limited(retry_after=3600)])
    with pytest.raises(openai.RateLimitError):
        client.with_options(max_retries=0).chat.completions.create(**chat())
    before = admin.key(1)
    assert before["status"] == "cooling_down" and before["cooldown_until"]
    page = html.unescape(web.post("/keys/test-all").text)
    assert _results(page)[1][0] == "ok"
    assert "stays cooling down until" in page
    after = admin.key(1)
    assert after["status"] == "cooling_down"
    assert after["cooldown_until"] == before["cooldown_until"]
    assert after["last_error"] == before["last_error"] and "429" in after["last_error"]
    tested = admin.call("POST", "/keys/1/test").json()
    assert tested["result"] == "ok" and "cooling down" in tested["note"]
    assert tested["key"]["status"] == "cooling_down"
    served = len(fake.requests)
    with pytest.raises(openai.APIStatusError):  # still out of the pool: the upstream not asked
        client.with_options(max_retries=0).chat.completions.create(**chat())
    assert len(fake.requests) == served
