"""The member's dashboard in a real headless Chromium at a phone's 360 px and a desktop's
1440 px: nothing sticks out of the viewport, tables become stacked cards on the phone, the
new key shows once with a working copy button."""

from __future__ import annotations

import openai
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.browser import FLAGS, ensure_chromium, screenshot
from tests.conftest import chat
from tests.members.conftest import PASSWORD, new_member
from tests.test_dashboard_layout import OVERFLOW

SECRET = "sk-portal-browser-aaaa1111"
STACKED = """(id) => {
  const table = document.getElementById(id);
  return {body: getComputedStyle(table.querySelector('tbody')).display,
          head: table.querySelector('thead').getBoundingClientRect().height};
}"""


@pytest.fixture(scope="module")
def chromium():
    path = ensure_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(chromium, server):
    context = chromium.new_context(base_url=server.url, viewport={"width": 1440, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    tab = context.new_page()
    problems = []
    tab.on("pageerror", lambda e: problems.append(str(e)))
    tab.on("console", lambda m: m.type == "error" and problems.append(m.text))
    tab.set_default_timeout(10_000)
    yield tab
    context.close()
    assert problems == []  # no script error, no CSP violation


def overflow(page) -> list[str]:
    """What sticks out of the viewport (empty when the page fits)."""
    seen = page.evaluate(OVERFLOW)
    extra = [] if seen["scroll"] <= seen["width"] else [f"scrollWidth {seen['scroll']}"]
    return extra + seen["culprits"]


def test_the_dashboard_fits_a_phone_and_a_desktop_and_shows_a_new_key_once(
    page, server, admin, fake
):
    admin.add_key(SECRET, fake.base_url)
    new_member(admin, "phone.person.with.a.rather.long.address@example.com")
    page.goto("/login")
    page.get_by_label("Username").fill("phone.person.with.a.rather.long.address@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your dashboard")).to_be_visible()

    page.locator("#new-key").get_by_label("Name").fill("my phone")
    page.locator("#new-key").get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret-value")
    expect(secret).to_be_visible()
    key = secret.input_value()
    assert key.startswith("kr-")
    page.locator("#new-secret").get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == key

    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    sdk.chat.completions.create(**chat())
    sdk.close()

    page.reload()  # the secret was shown once; the key and the request are listed
    expect(page.locator("#new-secret")).to_have_count(0)
    expect(page.locator("#keys tbody")).to_have_count(1)
    expect(page.locator("#requests tbody")).to_have_count(1)
    for width in (1440, 360):
        page.set_viewport_size({"width": width, "height": 800})
        page.reload()
        screenshot(page, f"member-dashboard-{width}")
        assert overflow(page) == [], (width, overflow(page))
        for table in ("keys", "requests"):
            shown = page.evaluate(STACKED, table)
            if width == 360:  # each row a card, the header row hidden
                assert shown["body"] == "block" and shown["head"] <= 1, (table, shown)
            else:
                assert shown["body"] == "table-row-group" and shown["head"] > 10, (table, shown)
