"""The audit log (issue 13, item 10): KeyRelay's own changes to keys as actor `system`, key
tests with their result, readable details, filters by actor, action and target."""

from __future__ import annotations

import html
import re

import openai
import pytest

from tests.conftest import chat
from tests.fake_upstream import Behaviour

pytestmark = pytest.mark.both_databases

SECRET = "sk-audit-aaaaaaaaaaaa1111"


@pytest.fixture
def settings(settings):
    settings["FAILURE_THRESHOLD"] = 2
    return settings


def _entries(web, **query) -> list[tuple[str, str, str, str]]:
    page = html.unescape(web.get("/audit", query_string=query).text)
    rows = re.findall(
        r'<tr data-action="([^"]+)" data-actor="([^"]+)">.*?<td>(?:<a [^>]*>)?([^<]*)(?:</a>)?</td>'
        r'<td class="wrap detail"><small>(.*?)</small>',
        page,
        re.S,
    )
    return [(a, who, target, re.sub(r"<[^>]+>", "", d)) for a, who, target, d in rows]


def test_system_changes_are_audited_with_readable_details(web, fake, admin, client):
    admin.add_key(SECRET, fake.base_url)
    fake.set_behaviour(SECRET, Behaviour.server_error(500))
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(**chat())
    [auto] = _entries(web, action="key.auto_disable")
    assert auto[:3] == ("key.auto_disable", "system", "key:1")
    assert "failures in a row: 2" in auto[3] and "last error: HTTP 500: The server had" in auto[3]
    web.post("/keys/1/toggle")  # enabled again by the admin
    fake.set_behaviour(SECRET, Behaviour.unauthorized())
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(**chat())
    [failed] = _entries(web, action="key.auth_failed")
    assert failed[:3] == ("key.auth_failed", "system", "key:1")
    assert (
        failed[3].startswith("error: HTTP 401: Incorrect API key provided")
        and SECRET not in failed[3]
    )
    with pytest.raises(openai.APIStatusError):  # no key left: nothing changes, no new entry
        client.chat.completions.create(**chat())
    assert len(_entries(web, action="key.auth_failed")) == 1


def test_key_tests_record_their_result(web, fake, admin):
    admin.add_key(SECRET, fake.base_url)
    fake.set_behaviour(SECRET, Behaviour.rate_limited())
    web.post("/keys/1/test", htmx=True)
    admin.call("POST", "/keys/1/test")
    entries = _entries(web, action="key.test")
    assert [who for _, who, _, _ in entries] == ["master key", "admin"]
    for _, _, target, detail in entries:
        assert target == "key:1"
        assert "result: rate_limited; status code: 429; latency ms: " in detail
        assert "message: HTTP 429: Rate limit reached" in detail


def test_details_are_readable_and_filters_narrow_the_log(web, fake, admin):
    admin.add_key(SECRET, fake.base_url)
    web.post("/profiles", {"name": "team-a", "use_paid_models": "yes"})
    [profile] = _entries(web, action="profile.create")
    assert "use paid models: yes" in profile[3] and "True" not in profile[3]
    assert "{" not in profile[3]  # not a Python repr
    web.post("/keys/1/toggle")
    assert [a for a, *_ in _entries(web, target="key:1")] == ["key.disable", "key.create"]
    # An action's beginning matches whatever its case (SQLite's LIKE; PostgreSQL's is exact).
    assert [a for a, *_ in _entries(web, action="Key.")] == ["key.disable", "key.create"]
    assert {who for _, who, _, _ in _entries(web, actor="master key")} == {"master key"}
    assert [a for a, *_ in _entries(web, actor="admin", target="key:1")] == ["key.disable"]
    page = web.get("/audit?actor=nobody").text
    assert "No entry matches." in page
