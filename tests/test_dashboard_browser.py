"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright):
login, keys, bulk import, live bars, viewer, CSRF, log filter, expired sessions.
Each page is saved as a screenshot under test-artifacts/screenshots/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from playwright.sync_api import expect

from gateway.keys.secrets import mask
from tests.browser import screenshot
from tests.conftest import ADMIN_PASSWORD, chat, make_viewer
from tests.fake_upstream import Behaviour
from tests.test_durability import ROOT, Gunicorn

SECRET = "sk-browser-aaaaaaaaaaaa1111"


@pytest.fixture
def settings(settings):
    settings["DASHBOARD_REFRESH"] = 0.4
    return settings


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server.url, viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    problems = []
    tab.on("console", lambda m: m.type == "error" and problems.append(m.text))
    tab.on("pageerror", lambda e: problems.append(str(e)))
    tab.set_default_timeout(10_000)
    yield tab
    context.close()
    # No CSP violation, no script error: htmx runs under our strict policy.
    # (A 4xx answer is logged as "Failed to load resource"; those are expected here.)
    assert [p for p in problems if not p.startswith("Failed to load resource")] == []


def login(page, username="admin", password=ADMIN_PASSWORD):
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_login_wrong_password_and_logout(page):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    screenshot(page, "login")
    login(page, password="wrong-password")
    expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    expect(page.get_by_label("Username")).to_have_value("admin")
    screenshot(page, "login-wrong-password")
    login(page)
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/keys")
    expect(page).to_have_url(re.compile(r"/login\?next=/keys$"))


def test_add_key_shows_it_masked_and_a_bad_form_keeps_its_input(page, fake):
    login(page)
    page.goto("/keys/new")
    page.get_by_label("Name", exact=True).fill("main")
    page.get_by_label("Secret").fill(SECRET)
    page.get_by_label("Base URL").fill("not a url")
    page.get_by_label("Tokens per day").fill("1000")
    page.get_by_label("Requests per minute").fill("60")
    page.get_by_label("Per-model limits").fill("gpt-4o rpm=5")
    page.get_by_role("button", name="Add and test").click()
    expect(page.locator("#base_url-error")).to_have_text(
        "'base_url' is not a valid URL (spaces or characters outside ASCII)."
    )
    expect(page.get_by_label("Name", exact=True)).to_have_value("main")
    expect(page.get_by_label("Tokens per day")).to_have_value("1000")
    expect(page.get_by_label("Requests per minute")).to_have_value("60")
    expect(page.get_by_label("Per-model limits")).to_have_value("gpt-4o rpm=5")
    screenshot(page, "key-form-error")
    page.get_by_label("Secret").fill(SECRET)
    page.get_by_label("Base URL").fill(fake.base_url)
    page.get_by_role("button", name="Add and test").click()
    expect(page).to_have_url(re.compile(r"/keys$"))
    expect(page.locator(".flash.ok")).to_contain_text("Test passed")
    expect(page.locator("#key-1 code.secret")).to_have_text(mask(SECRET))
    assert SECRET not in page.content()
    screenshot(page, "keys")
    page.locator("#key-1").get_by_role("button", name="Disable").click()
    expect(page.locator("#key-1 .badge")).to_have_text("disabled")
    expect(page.locator("#key-1 .note")).to_have_text("Key #1 disabled.")
    page.locator("#key-1").get_by_role("link", name="Delete").click()
    screenshot(page, "key-delete-confirm")
    page.get_by_role("button", name="Delete the key").click()
    expect(page.locator(".flash.ok")).to_contain_text("Deleted key #1 main")


def test_bulk_import_report(page, fake):
    login(page)
    page.goto("/keys/import")
    pasted = ["sk-bulk-aaaaaaaaaaaa0001", "sk-bulk-aaaaaaaaaaaa0002"]
    pasted += ["sk-bulk-aaaaaaaaaaaa0001", "has space inside"]
    page.get_by_label("Keys, one a line").fill("\n".join(pasted))
    page.get_by_label("Base URL").fill(fake.base_url)
    page.get_by_label("Profile").fill("bulk")
    page.get_by_role("button", name="Import").click()
    report = page.locator("#import-report")
    expect(report.locator('[data-count="added"]')).to_have_text("2")
    expect(report.locator('[data-count="duplicates"]')).to_have_text("1")
    expect(report.locator('[data-count="rejected"]')).to_have_text("1")
    assert "sk-bulk-aaaaaaaaaaaa0001" not in page.content()
    screenshot(page, "bulk-import-report")


def test_bar_moves_after_proxy_traffic_without_a_reload(page, admin, client, fake):
    admin.add_key(SECRET, fake.base_url, name="main", daily_token_limit=1000)
    login(page)
    meter = page.locator('#key-bars tr[data-key-id="1"] meter')
    expect(meter).to_have_attribute("value", "0")
    requests = page.locator('#cards [data-period="today"] [data-stat="requests"]')
    expect(requests).to_have_text("0")
    page.evaluate("window.keyrelayMarker = 'same page'")
    reply = client.chat.completions.create(**chat())
    expect(meter).to_have_attribute("value", str(reply.usage.total_tokens))
    expect(requests).to_have_text("1")
    assert page.evaluate("window.keyrelayMarker") == "same page"  # no reload happened
    fake.set_behaviour(SECRET, Behaviour.server_error(500))
    with pytest.raises(Exception):  # noqa: B017 - the SDK's error type is not the point
        client.chat.completions.create(**chat())
    expect(page.locator("#recent-errors .code.bad").first).to_have_text("502")
    screenshot(page, "overview")


def test_viewer_cannot_change_anything(page, app, admin, fake):
    admin.add_key(SECRET, fake.base_url, name="main")
    make_viewer(app, "vera", "viewer-pass-1")
    login(page, "vera", "viewer-pass-1")
    page.goto("/keys")
    expect(page.locator("#key-1")).to_be_visible()
    expect(page.get_by_role("link", name="Add a key")).to_have_count(0)
    expect(page.locator("#key-1").get_by_role("button")).to_have_count(0)
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    screenshot(page, "keys-viewer")
    page.goto("/keys/new")  # the form is reachable by URL, saving it is not
    page.get_by_label("Name", exact=True).fill("sneaky")
    page.get_by_label("Secret").fill("sk-sneaky-000000000000")
    page.get_by_label("Base URL").fill(fake.base_url)
    page.get_by_role("button", name="Add and test").click()
    expect(page.locator(".flash.error")).to_have_text(
        "Viewers can look but not change anything; ask an admin."
    )
    page.goto("/profiles")
    expect(page.get_by_role("button", name="Create")).to_have_count(0)
    assert [k["name"] for k in admin.call("GET", "/keys").json()["data"]] == ["main"]


def test_posts_without_the_csrf_token_are_refused(page, admin, fake):
    login(page)
    page.goto("/keys/new")
    page.evaluate("document.querySelector('form.card input[name=csrf_token]').remove()")
    page.get_by_label("Name", exact=True).fill("forged")
    page.get_by_label("Secret").fill("sk-forged-00000000000000")
    page.get_by_label("Base URL").fill(fake.base_url)
    page.get_by_role("button", name="Add and test").click()
    expect(page.locator(".flash.error")).to_contain_text("Reload the page and try again")
    # A cross-site style post: the session cookie goes along, the token does not.
    forged = page.request.post("/keys", form={"name": "x", "secret": "sk-forged-1111111111111"})
    assert forged.status == 400
    assert admin.call("GET", "/keys").json()["data"] == []


def test_request_log_filter_and_attempts(page, admin, client, fake):
    admin.add_key(SECRET, fake.base_url, name="main")
    admin.add_key("sk-browser-bbbbbbbbbbbb2222", fake.base_url, name="spare")
    client.chat.completions.create(**chat())
    client.chat.completions.create(**chat(model="gpt-4o"))
    fake.set_behaviour(SECRET, Behaviour.rate_limited(retry_after=60))
    client.chat.completions.create(**chat())  # key 1 answers 429, key 2 serves it
    login(page)
    page.goto("/logs")
    expect(page.locator("tr[data-log-id]")).to_have_count(3)
    page.get_by_label("Model").fill("gpt-4o")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr[data-log-id]")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"model=gpt-4o"))
    page.goto("/logs")
    row = page.locator('tr[data-log-id="3"]')
    row.get_by_role("button").click()
    attempts = page.locator("#attempts-3 table.attempts tbody tr")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("rate limited")
    expect(attempts.nth(1)).to_contain_text("#2 spare")
    screenshot(page, "request-log")
    page.get_by_label("From").fill("2026-11-30")
    page.get_by_label("To").fill("2026-11-01")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#until-error")).to_have_text("'To' is before 'From'.")


def test_expired_session_in_a_live_refresh_goes_to_the_login_page(page, browser):
    login(page)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.context.clear_cookies()
    # The next poll (every 0.4 s) is refused; the wait is long only for a loaded machine.
    expect(page).to_have_url(re.compile(r"/login\?next=/$"), timeout=15000)
    expect(page.get_by_role("heading", name="Log in to KeyRelay")).to_be_visible()
    expect(page.locator("#cards")).to_have_count(0)  # the whole page, not a fragment


@pytest.mark.both_databases
def test_every_page_renders(page, admin, client, fake, clock):
    admin.add_key(SECRET, fake.base_url, name="main", daily_token_limit=5000)
    admin.add_key("sk-browser-cccccccccccc3333", fake.base_url, name="team", profile="team-a")
    for _day in range(3):
        for model in ("gpt-4o-mini", "gpt-4o"):
            client.chat.completions.create(**chat(model=model))
        clock.advance(days=1)
    login(page)
    for path, name, heading in (
        ("/usage", "usage-by-model", "Usage, last 30 days"),
        ("/usage?by=key", "usage-by-key", "Usage, last 30 days"),
        ("/profiles", "profiles", "Profiles"),
        ("/audit", "audit", "Audit log"),
        ("/users", "users", "Users"),
        ("/prices", "prices", "Model prices"),
        ("/", "overview-with-history", "Overview"),
    ):
        page.goto(path)
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        screenshot(page, name)
    page.goto("/usage")
    expect(page.locator("#tokens-chart rect title").first).to_contain_text("gpt-4o")


def test_a_new_user_follows_the_readme(browser, fake, tmp_path):
    """README: start (init-db, then gunicorn as in production: gevent, 2 workers), log in
    with the password printed once, add a key, send a request, watch the overview move."""
    instance = tmp_path / "instance"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    env["KEYRELAY_INSTANCE_PATH"] = str(instance)
    flask = Path(sys.executable).with_name("flask")
    init = subprocess.run(
        [str(flask), "--app", "app", "init-db"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr
    password = re.search(r"created with password\s+(\S+)", init.stderr).group(1)
    assert "Dashboard:" in init.stdout
    master = (instance / "master_key").read_text().strip()
    server = Gunicorn(
        instance, None, MASTER_KEY=None, WORKERS="2", DASHBOARD_REFRESH="0.5", SECRET_KEY=None
    )
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    try:
        login(page, "admin", password)
        page.get_by_role("link", name="Provider keys").click()
        page.get_by_role("link", name="Add a key").click()
        page.get_by_label("Name", exact=True).fill("my-openai")
        page.get_by_label("Secret").fill(SECRET)
        page.get_by_label("Base URL").fill(fake.base_url)
        page.get_by_label("Tokens per day").fill("100000")
        page.get_by_role("button", name="Add and test").click()
        expect(page.locator(".flash.ok")).to_contain_text("Test passed")
        page.get_by_role("link", name="Overview").click()
        meter = page.locator('#key-bars tr[data-key-id="1"] meter')
        expect(meter).to_have_attribute("value", "0")
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=master, max_retries=0)
        total = 0
        for _ in range(4):  # two workers: some requests land on the one not serving the page
            total += sdk.chat.completions.create(**chat()).usage.total_tokens
        expect(meter).to_have_attribute("value", str(total))
        expect(page.locator('#cards [data-period="today"] [data-stat="requests"]')).to_have_text(
            "4"
        )
        screenshot(page, "first-run-overview")
    finally:
        context.close()
        server.kill()


def test_client_key_is_shown_once_with_a_copy_button(page, admin, fake, server):
    admin.add_key(SECRET, fake.base_url, name="main")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    login(page)
    page.get_by_role("link", name="Client keys").click()
    page.get_by_label("Name", exact=True).fill("billing-app")
    page.get_by_role("button", name="Create key").click()
    shown = page.get_by_label("The new client key")
    key = shown.input_value()
    assert key.startswith("kr-")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    screenshot(page, "client-key-created")
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    assert sdk.chat.completions.create(**chat()).choices[0].message.content
    page.goto("/client-keys")
    expect(page.get_by_label("The new client key")).to_have_count(0)
    assert key not in page.content()
    page.locator('tr[data-client-key-id="1"]').get_by_role("link", name="Revoke").click()
    page.get_by_role("button", name="Revoke the key").click()
    expect(page.locator('tr[data-client-key-id="1"] .badge')).to_have_text("revoked")
    screenshot(page, "client-keys")
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(**chat())


def test_rovodev_page_adds_an_account_masked_and_sync_shows_what_is_left(page):
    from tests.fake_rovodev import Account, FakeRovoDev

    token = "ATATT3xFfGF0browser-rovodev-aaaa"
    cloud = "a436116f-02ce-4520-8fbb-7301462a1674"  # an Atlassian cloud id: the site's UUID
    with FakeRovoDev({token: Account("dev@atlassian.com", cloud)}) as rovo:
        login(page)
        page.get_by_role("link", name="RovoDev").click()
        page.get_by_label("Email").fill("not an email")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Add account").click()
        expect(page.locator("#email-error")).to_contain_text("email address")
        expect(page.get_by_label("API token")).to_have_value("")  # never sent back
        page.get_by_label("Email").fill("dev@atlassian.com")
        page.get_by_label("API token").fill(token)
        page.get_by_label("Cloud ID (optional)").fill(cloud)
        page.get_by_label("Base URL (optional)").fill(rovo.base_url)
        page.get_by_role("button", name="Add account").click()
        expect(page.locator(".flash.ok")).to_contain_text("Test passed")
        row = page.locator("table.rovodev tr[data-key-id]")
        expect(row.locator(".token")).to_have_text(mask(token))
        expect(row.locator("meter")).to_have_attribute("max", "20000000")
        assert token not in page.content()
        rovo.accounts[token].daily_used = 15_000_000
        page.get_by_role("button", name="Sync usage").click()
        expect(page.locator(".flash.ok")).to_contain_text("Synced 1 of 1")
        expect(row.locator("td.synced .amount")).to_have_text("5,000,000 tokens")
        screenshot(page, "rovodev")
