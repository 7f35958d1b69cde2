"""Finding why a request failed (issue 13, item 6): the request detail page by id, reached
from the log, the overview's failures and a search by id (Flask test client and Chromium);
the log's error, client-key and cost columns and filters; time order."""

from __future__ import annotations

import html
import re

import openai
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.browser import FLAGS, ensure_chromium, screenshot
from tests.conftest import ADMIN_PASSWORD, MASTER_KEY, chat
from tests.fake_upstream import Behaviour

pytestmark = pytest.mark.both_databases

SECRET = "sk-detail-aaaaaaaaaaaa1111"


def _traffic(admin, fake, server):
    """A served request with a client key through a route alias, a provider failure (502)
    and a client-side refusal (a client key over its RPM). Answers their request ids."""
    admin.add_key(SECRET, fake.base_url, name="main")
    assert admin.call("POST", "/routes", {"name": "fast", "target": "gpt-4o-mini"}).status == 201
    made = admin.call("POST", "/client-keys", {"name": "team-app"}).json()
    ok_client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=made["key"], max_retries=0)
    served = ok_client.chat.completions.with_raw_response.create(**chat(model="fast"))
    ok_id = served.headers["x-keyrelay-request-id"]
    master = openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY, max_retries=0)
    fake.set_behaviour(SECRET, Behaviour.server_error(502))
    with pytest.raises(openai.APIStatusError) as failed:
        master.chat.completions.create(**chat())
    fail_id = failed.value.response.headers["x-keyrelay-request-id"]
    fake.set_behaviour(SECRET, None)
    limited = admin.call("POST", "/client-keys", {"name": "limited", "rpm_limit": 1}).json()
    small = openai.OpenAI(base_url=f"{server.url}/v1", api_key=limited["key"], max_retries=0)
    small.chat.completions.create(**chat())
    with pytest.raises(openai.RateLimitError) as refused:  # KeyRelay's own limit
        small.chat.completions.create(**chat())
    refused_id = refused.value.response.headers["x-keyrelay-request-id"]
    for sdk in (ok_client, master, small):
        sdk.close()
    return ok_id, fail_id, refused_id, made["id"]


def test_the_detail_page_tells_everything_about_a_request(admin, fake, server, web):
    ok_id, fail_id, _, client_key_id = _traffic(admin, fake, server)
    page = html.unescape(web.get(f"/requests/{ok_id}").text)
    assert f'Request <code class="request-id">{ok_id}</code>' in page
    assert re.search(rf'data-field="client-key">#{client_key_id} team-app<', page)
    assert re.search(r'data-field="asked">fast<', page)
    assert re.search(r'data-field="served">gpt-4o-mini <small>at openai', page)
    assert re.search(r'data-field="dialect"><code>[^<]*chat', page)
    assert re.search(r'data-field="key">#1 main<', page)
    assert re.search(r'data-field="tokens">\d+ in · \d+ out · \d+ total', page)
    assert re.search(r'data-field="cost">\$0\.0\d+<', page)
    failed = html.unescape(web.get(f"/requests/{fail_id}").text)
    assert 'data-status="502"' in failed and "provider failure" in failed
    # The failed request names the key its attempt went to, and the upstream's message.
    assert re.search(r'data-field="key">#1 main<', failed)
    assert re.search(r'<tr data-attempt="1"><td>1</td><td>#1 main</td>', failed)
    assert "HTTP 502: Bad gateway." in failed and '{"error"' not in failed
    assert web.get("/requests/not-a-request").status_code == 404


def test_the_log_has_error_client_key_and_cost_columns_and_filters(admin, fake, server, web):
    ok_id, fail_id, refused_id, client_key_id = _traffic(admin, fake, server)

    def ids(**params):
        page = web.get("/logs", query_string=params)
        assert page.status_code == 200, page.text
        return re.findall(r'data-request-id="([^"]+)"', page.text)

    every = ids()
    assert len(every) == 4 and every[0] == refused_id and every[2:] == [fail_id, ok_id]
    assert ids(kind="provider") == [fail_id] and ids(kind="client") == [refused_id]
    assert ids(client_key=str(client_key_id)) == [ok_id]
    assert ids(client_key="master") == [fail_id]
    log = html.unescape(web.get("/logs").text)
    fail_row = re.search(rf'data-request-id="{fail_id}".*?</tr>', log, re.S).group(0)
    assert "#1 main" in fail_row  # the key the failed attempt went to, not "—"
    assert '<td class="error"><small>All 1 attempts for model gpt-4o-mini failed' in fail_row
    ok_row = re.search(rf'data-request-id="{ok_id}".*?</tr>', log, re.S).group(0)
    assert f"#{client_key_id} team-app" in ok_row and "fast <small>→ gpt-4o-mini" in ok_row
    assert re.search(r'<td class="num">\$0\.0\d+</td>', ok_row)
    assert f'href="/requests/{ok_id}"><code>{ok_id}</code>' in ok_row  # the full id
    bad = web.get("/logs?kind=everything")
    assert bad.status_code == 422 and "Pick client or provider errors." in bad.text


def test_a_search_by_id_finds_the_request(admin, fake, server, web):
    ok_id, *_ = _traffic(admin, fake, server)
    found = web.get("/requests", query_string={"id": ok_id})
    assert found.status_code == 302 and found.location.endswith(f"/requests/{ok_id}")
    start = web.get("/requests", query_string={"id": ok_id[:-3].upper()})
    assert start.location.endswith(f"/requests/{ok_id}")  # its beginning, any case
    end = web.get("/requests", query_string={"id": ok_id[-10:]})
    assert end.location.endswith(f"/requests/{ok_id}")  # or its end (the random part)
    shared = web.get("/requests", query_string={"id": "req_"})  # many match: the log
    assert shared.location.endswith("/logs?request=req_")
    missing = web.get("/requests", query_string={"id": "zzzz"}, follow_redirects=True)
    assert "No requests match." in missing.text
    bad = web.get("/requests", query_string={"id": "a b"}, follow_redirects=True)
    assert bad.status_code == 422 and "Give a request id" in html.unescape(bad.text)


def test_the_overview_lists_provider_failures_linked_to_their_page(admin, fake, server, web):
    _, fail_id, refused_id, _ = _traffic(admin, fake, server)
    errors = web.get("/partials/errors").text
    assert f'href="/requests/{fail_id}"' in errors
    assert refused_id not in errors  # a client over its own limit does not drown failures
    assert 'href="/logs?kind=client"' in errors


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=ensure_chromium(), args=FLAGS)
        yield chromium
        chromium.close()


def test_the_detail_page_is_reached_from_the_log_the_overview_and_a_search(
    admin, fake, server, browser
):
    _, fail_id, _, _ = _traffic(admin, fake, server)
    context = browser.new_context(base_url=server.url, viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto("/login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    heading = page.get_by_role("heading", name=f"Request {fail_id}")
    # From the overview's failures.
    page.goto("/")
    page.locator(f'#recent-errors a[href="/requests/{fail_id}"]').click()
    expect(heading).to_be_visible()
    expect(page.locator('[data-field="key"]')).to_have_text("#1 main")
    screenshot(page, "request-detail")
    # From the log.
    page.goto("/logs")
    page.locator(f'tr[data-request-id="{fail_id}"] a.request-id').click()
    expect(heading).to_be_visible()
    # From a search by id.
    page.goto("/logs")
    page.get_by_label("Request id").fill(fail_id[-12:])  # the end a person copies
    page.get_by_role("button", name="Find").click()
    expect(heading).to_be_visible()
    expect(page.locator('[data-field="error"]')).to_contain_text("key #1 server error")
    expect(page.locator('tr[data-attempt="1"]')).to_contain_text("HTTP 502: Bad gateway.")
    context.close()
