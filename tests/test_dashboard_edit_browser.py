"""Edit in place and post/redirect/get in a real headless Chromium: a client key and a route
are changed through their prefilled forms (every bad field named at once, what was typed
kept), and reloading the page after "key created" shows nothing and creates nothing."""

from __future__ import annotations

import re

import openai
import pytest
from playwright.sync_api import expect

from tests.browser import screenshot
from tests.conftest import ADMIN_PASSWORD, chat

SECRET = "sk-edit-browser-aaaaaaaa1111"


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server.url, viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    problems = []
    tab.on("pageerror", lambda e: problems.append(str(e)))
    tab.set_default_timeout(10_000)
    tab.goto("/login")
    tab.get_by_label("Username").fill("admin")
    tab.get_by_label("Password").fill(ADMIN_PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    expect(tab).to_have_url(re.compile(r"/$"))
    yield tab
    context.close()
    assert problems == []


def _client_keys(admin) -> list[dict]:
    return admin.call("GET", "/client-keys").json()["data"]


def test_reloading_the_key_created_page_creates_nothing(page, admin, fake, server):
    admin.add_key(SECRET, fake.base_url, name="main")
    page.goto("/client-keys")
    page.get_by_label("Name", exact=True).fill("billing-app")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("The new client key").input_value()
    assert key.startswith("kr-") and len(_client_keys(admin)) == 1
    page.reload()  # the browser asks nothing: the page came from a redirect
    expect(page.get_by_role("heading", name="Client keys")).to_be_visible()
    expect(page.get_by_label("The new client key")).to_have_count(0)
    assert key not in page.content()
    assert len(_client_keys(admin)) == 1  # no second key
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    assert sdk.chat.completions.create(**chat()).choices[0].message.content


def test_a_client_key_is_edited_through_its_prefilled_form(page, admin, fake):
    admin.add_key(SECRET, fake.base_url, name="main")
    page.goto("/client-keys")
    page.get_by_label("Name", exact=True).fill("app")
    page.get_by_label("Requests per minute").fill("60")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("The new client key").input_value()
    page.locator('tr[data-client-key-id="1"]').get_by_role("link", name="Edit").click()
    expect(page.get_by_role("heading", name="Edit client key #1 app")).to_be_visible()
    expect(page.get_by_label("Name", exact=True)).to_have_value("app")
    expect(page.get_by_label("Requests per minute")).to_have_value("60")
    assert key not in page.content()
    page.get_by_label("Requests per minute").fill("-1")
    page.get_by_label("Budget, USD").fill("-3")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#rpm_limit-error")).to_be_visible()
    expect(page.locator("#max_budget-error")).to_be_visible()
    expect(page.get_by_label("Budget, USD")).to_have_value("-3")
    screenshot(page, "client-key-edit-errors")
    page.get_by_label("Name", exact=True).fill("app-renamed")
    page.get_by_label("Requests per minute").fill("30")
    page.get_by_label("Budget, USD").fill("12.5")
    page.get_by_label("Budget period").select_option("30d")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/client-keys$"))
    row = page.locator('tr[data-client-key-id="1"]')
    expect(row).to_contain_text("app-renamed")
    expect(row).to_contain_text("30 rpm")
    [saved] = _client_keys(admin)
    assert (saved["rpm_limit"], saved["max_budget"], saved["budget_duration"]) == (
        30,
        "12.500000",
        "30d",
    )


def test_a_route_is_edited_through_its_prefilled_form(page, admin):
    page.goto("/routes")
    page.get_by_label("Name", exact=True).fill("smart")
    page.get_by_label("Target").fill("gpt-4o")
    page.get_by_role("button", name="Add route").click()
    page.locator('tr[data-route="smart"]').get_by_role("link", name="Edit").click()
    expect(page.get_by_label("Target")).to_have_value("gpt-4o")
    page.get_by_label("Key strategy").select_option("priority")
    page.get_by_label("Prompt too long").select_option("fallback")
    page.get_by_label("Context window (tokens, for prune)").fill("big")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#context_window-error")).to_be_visible()
    expect(page.get_by_label("Key strategy")).to_have_value("priority")
    page.get_by_label("Fallbacks").fill("gpt-4o-mini")
    page.get_by_label("Context window (tokens, for prune)").fill("")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/routes$"))
    expect(page.locator('tr[data-route="smart"]')).to_contain_text("gpt-4o-mini")
    screenshot(page, "route-edited")
    [route] = admin.call("GET", "/routes").json()["data"]
    assert (route["strategy"], route["on_context_overflow"]) == ("priority", "fallback")
    assert route["fallbacks"] == ["gpt-4o-mini"]
