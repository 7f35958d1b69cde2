"""The dashboard's look in a real headless Chromium: every page fits a 360 px phone and a
1440 px desktop without a horizontal page scroll, axe-core finds no serious or critical
problem in the light and the dark theme, and a key test that fails keeps the key table
inside the viewport. The pages are found by following the dashboard's own links, so a page
added later is checked too. Screenshots land in test-artifacts/screenshots/layout-*."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest
import urllib3
from cryptography.fernet import Fernet
from playwright.sync_api import expect

from tests.browser import screenshot
from tests.conftest import (
    ADMIN_PASSWORD,
    MASTER_KEY,
    MODELS,
    Admin,
    ManualClock,
    Web,
    chat,
    live_app,
)
from tests.fake_upstream import Behaviour, FakeUpstream

AXE = next((Path(__file__).parent.parent / "static" / "vendor").glob("axe-core-*.min.js"))
WIDTHS = (360, 1440)
SCHEMES = ("light", "dark")
# A provider's refusal as it really comes: long JSON with unbroken tokens (ids, URLs).
LONG_MESSAGE = (
    "Your request was rejected by the organization policy engine: project "
    "proj_9f8e7d6c5b4a39281706f5e4d3c2b1a0_extremely_long_identifier_without_spaces is not "
    "allowed to list models; see https://platform.example.com/docs/guides/error-codes/"
    "policy-denied-list-models-for-this-project-and-region-eu-west-1 for details."
)
FAILING_SECRET = "sk-layout-policy-denied-0009"


@dataclass
class Site:
    url: str
    fake: FakeUpstream
    clock: ManualClock
    admin: Admin


def _settings(instance: Path, clock: ManualClock) -> dict:
    return {
        "INSTANCE_PATH": str(instance),
        "MASTER_KEY": MASTER_KEY,
        "SECRET_KEY": Fernet.generate_key().decode(),
        "CLOCK": clock,
        "READ_TIMEOUT": 1.0,
        "CONNECT_TIMEOUT": 1.0,
        "REQUEST_DEADLINE": 10.0,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOGIN_DELAY": 0.01,
        "SCHEDULER": False,
        "DASHBOARD_REFRESH": 60.0,  # a swap in the middle of a check would only add noise
    }


def _seed_keys(admin: Admin, fake: FakeUpstream) -> None:
    """Thirteen provider keys in four profiles: healthy, limited, failing in several ways."""
    base = fake.base_url
    for profile, body in (("team-a", {"strategy": "round-robin"}), ("batch-eu-west", {})):
        assert admin.call("PUT", f"/profiles/{profile}", body).status == 200
    admin.add_key("sk-layout-main-0001", base, name="openai-main", daily_token_limit=200_000)
    admin.add_key("sk-layout-backup-0002", base, name="openai-backup")
    admin.add_key(
        "sk-layout-capped-0003",
        base,
        name="capped",
        daily_cost_limit="5",
        monthly_token_limit=10_000_000,
        rpm_limit=500,
        expires_at="2027-06-30T00:00:00Z",
    )
    admin.add_key(
        "sk-layout-tiny-0004", base, name="tiny-daily-quota", profile="quota", daily_token_limit=40
    )
    admin.add_key(
        "sk-layout-longname-0005",
        base,
        name="analytics-team-shared-key-for-the-quarterly-reporting-pipeline",
        profile="team-a",
        models=["gpt-4o-mini", "gpt-4o"],
    )
    admin.add_key("sk-layout-team-0006", base, name="team-a-2", profile="team-a")
    admin.add_key("sk-layout-revoked-0007", base, name="revoked-upstream", profile="team-a")
    admin.add_key("sk-layout-flaky-0008", base, name="flaky", profile="batch-eu-west")
    admin.add_key(FAILING_SECRET, base, name="policy-denied", profile="batch-eu-west")
    admin.add_key("sk-layout-region-0010", base, name="region-blocked", profile="batch-eu-west")
    admin.add_key("sk-layout-batch-0011", base, name="batch-2", profile="batch-eu-west")
    admin.add_key("sk-layout-off-0012", base, name="switched-off", profile="batch-eu-west")
    admin.add_key("sk-layout-busy-0013", base, name="rate-limited", profile="quota")
    assert admin.call("POST", "/keys/12/toggle").status == 200
    fake.set_behaviour("sk-layout-revoked-0007", Behaviour.unauthorized())
    fake.set_behaviour("sk-layout-flaky-0008", Behaviour.server_error(500))
    fake.set_behaviour(FAILING_SECRET, Behaviour.bad_request(LONG_MESSAGE, "policy_denied"))
    fake.set_behaviour("sk-layout-region-0010", Behaviour.forbidden())
    fake.set_behaviour("sk-layout-busy-0013", Behaviour.rate_limited(retry_after=3600))


def _seed_config(admin: Admin) -> list[str]:
    """Routes, a price override and four client keys (one revoked); their keys."""
    for body in (
        {"name": "smart", "target": "gpt-4o", "fallbacks": ["gpt-4o-mini"], "paid": True},
        {"name": "openrouter/*", "fallbacks": ["gpt-4o-mini"]},
        {"name": "cheap", "target": "gpt-4o-mini"},
    ):
        assert admin.call("POST", "/routes", body).status == 201
    price = {"input_per_mtok": "0.15", "output_per_mtok": "0.6"}
    assert admin.call("PUT", "/prices/gpt-4o-mini", price).status == 200
    keys = []
    for body in (
        {"name": "billing-app", "max_budget": "50", "budget_duration": "30d", "rpm_limit": 600},
        {"name": "support-bot", "profile": "team-a", "models": ["gpt-4o-mini"], "tpm_limit": 90000},
        {"name": "nightly-batch", "profile": "batch-eu-west", "max_budget": "2"},
        {"name": "old-prototype"},
    ):
        response = admin.call("POST", "/client-keys", body)
        assert response.status == 201, response.data
        keys.append(response.json()["key"])
    assert admin.call("POST", "/client-keys/4/revoke").status == 200
    # Members: one with a long address, one suspended (the Members page's rows).
    for email in ("a.rather.long.name.of.a.person@engineering.example.com", "kim@example.com"):
        made = admin.call("POST", "/members", {"email": email, "password": "member-pass-1"})
        assert made.status == 201
    suspended = admin.call("PATCH", f"/members/{made.json()['id']}", {"suspended": True})
    assert suspended.status == 200
    return keys


def _seed_traffic(site: Site, client_keys: list[str]) -> None:
    """Five days of requests: the master key on each profile, client keys, streams, errors."""
    url = f"{site.url}/v1"
    master = openai.OpenAI(base_url=url, api_key=MASTER_KEY, max_retries=0)
    apps = [openai.OpenAI(base_url=url, api_key=k, max_retries=0) for k in client_keys[:3]]
    for day in range(5):
        for n, model in enumerate(MODELS * 3):
            profile = ("default", "team-a", "batch-eu-west")[n % 3]
            _send(master, chat(model=model), profile, stream=n % 4 == 0)
        for app in apps:
            _send(app, chat(content="Summarise the ticket " * (day + 1)))
        if day < 4:  # the last day is today
            site.clock.advance(days=1)
    site.fake.set_behaviour("sk-layout-batch-0011", Behaviour.server_error(502))
    _send(master, chat(), "batch-eu-west")  # every key fails: a 502 with its attempts
    for _ in range(3):  # today's quota of one key runs out, the other cools down (amber)
        _send(master, chat(content="A longer question " * 20), "quota")
    site.fake.set_behaviour("sk-layout-batch-0011", None)


def _send(sdk: openai.OpenAI, body: dict, profile: str | None = None, stream=False) -> None:
    headers = {"X-Profile": profile} if profile else {}
    try:
        if stream:
            for _ in sdk.chat.completions.create(**body, stream=True, extra_headers=headers):
                pass
        else:
            sdk.chat.completions.create(**body, extra_headers=headers)
    except openai.APIError:
        pass  # failed requests are part of the picture


# One worker runs this module under pytest-xdist (./test.sh): the seeded site and its browser tab
# are built once, not once per worker.
pytestmark = pytest.mark.xdist_group("dashboard_layout")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A dashboard full of realistic data, seeded through the admin API and real traffic."""
    clock = ManualClock()
    http = urllib3.PoolManager(retries=False)
    instance = tmp_path_factory.mktemp("layout") / "instance"
    with FakeUpstream(models=MODELS) as fake, live_app(_settings(instance, clock)) as (app, live):
        admin = Admin(live.url, http)
        site = Site(live.url, fake, clock, admin)
        _seed_keys(admin, fake)
        client_keys = _seed_config(admin)
        _seed_traffic(site, client_keys)
        web = Web(app)  # no API for users: the dashboard's own form
        form = {"username": "vera-viewer", "password": "viewer-pass-1", "role": "viewer"}
        assert web.post("/users", form).status_code == 302
        assert admin.call("POST", "/keys/9/test").status == 200  # its long error is stored
        yield site
    http.clear()


@pytest.fixture(scope="module")
def session(browser, site):
    """One logged-in tab for the whole module; script errors fail the test that saw them."""
    context = browser.new_context(base_url=site.url, viewport={"width": 1440, "height": 900})
    tab = context.new_page()
    tab.problems = []
    tab.on("console", lambda m: m.type == "error" and tab.problems.append(m.text))
    tab.on("pageerror", lambda e: tab.problems.append(str(e)))
    tab.set_default_timeout(15_000)
    tab.goto("/login")
    tab.get_by_label("Username").fill("admin")
    tab.get_by_label("Password").fill(ADMIN_PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    expect(tab.get_by_role("heading", name="Overview")).to_be_visible()
    yield tab
    context.close()


@pytest.fixture
def page(session):
    session.problems.clear()
    session.set_viewport_size({"width": 1440, "height": 900})
    session.emulate_media(color_scheme="light")
    yield session
    assert [p for p in session.problems if not p.startswith("Failed to load resource")] == []


# -- finding the pages ----------------------------------------------------------------

SKIP = re.compile(r"^/(static|api|v1|logout|healthz|readyz)\b|\.(csv|yaml)$")


def _page_key(href: str) -> str:
    """One entry per kind of page: ids become N, query values are dropped."""
    parts = urlsplit(href)
    query = "&".join(sorted(p.split("=")[0] for p in parts.query.split("&") if p))
    return re.sub(r"\d+", "N", parts.path) + ("?" + query if query else "")


def _links(page) -> list[str]:
    """Same-site page links on the current page (not downloads, not the API)."""
    hrefs = page.eval_on_selector_all(
        "a[href]:not([download])", "els => els.map(a => a.getAttribute('href'))"
    )
    return [h for h in hrefs if h.startswith("/") and not SKIP.search(urlsplit(h).path)]


@pytest.fixture(scope="module")
def pages(session) -> list[str]:
    """Every dashboard page reachable by a link from the overview, one per kind."""
    found, queue = {}, ["/"]
    while queue and len(found) < 40:
        href = queue.pop(0)
        key = _page_key(href)
        if key in found:
            continue
        response = session.goto(href)
        assert response.status == 200, href
        found[key] = href
        queue += [h for h in _links(session) if _page_key(h) not in found]
    return list(found.values())


def _name(href: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", href.lower()).strip("-")
    return name or "overview"


# -- checks ---------------------------------------------------------------------------

OVERFLOW = """() => {
  const width = innerWidth, culprits = [];
  const clipped = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(p).overflowX)) return true;
    }
    return false;
  };
  for (const el of document.body.querySelectorAll('*')) {
    const right = el.getBoundingClientRect().right;
    if (right > width + 0.5 && !clipped(el)) {
      const names = typeof el.className === 'string' ? el.className.trim().split(/\\s+/) : [];
      const cls = names.filter(Boolean).map((n) => '.' + n).join('');
      const id = el.id ? '#' + el.id : '';
      culprits.push(`${el.tagName.toLowerCase()}${id}${cls} ${Math.round(right)}px`);
    }
  }
  return {scroll: document.documentElement.scrollWidth, width, culprits: culprits.slice(0, 6)};
}"""

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ` + v.nodes.slice(0, 3)
      .map((n) => n.target.join(' ') + ' — '
        + (n.failureSummary || '').replace(/\\s+/g, ' ').slice(0, 160))
      .join(' | '));
}"""

EMPTY_HEADERS = """() => [...document.querySelectorAll('th')]
  .filter((th) => !th.textContent.trim() && !th.getAttribute('aria-label'))
  .map((th) => th.closest('table').className || 'table')"""


def _open(page, href: str) -> None:
    """Load a page; on the request log, open a row's attempts as a user would."""
    page.goto(href)
    if urlsplit(href).path == "/logs":
        page.locator("tr[data-log-id] button").first.click()
        expect(page.locator("table.attempts").first).to_be_visible()


def _fits(page) -> str | None:
    """None when the page has no horizontal scroll, else what sticks out."""
    seen = page.evaluate(OVERFLOW)
    if seen["scroll"] <= seen["width"]:
        return None
    return f"scrollWidth {seen['scroll']} > {seen['width']}: {', '.join(seen['culprits'])}"


def _axe(page) -> list[str]:
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(url="/static/vendor/" + AXE.name)  # the test's, not the page's
    return page.evaluate(AXE_RUN)


def test_every_page_fits_a_phone_and_a_desktop(page, pages):
    assert len(pages) >= 12, pages  # the crawl found the dashboard, not just a login form
    problems = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        for href in pages:
            _open(page, href)
            if (trouble := _fits(page)) is not None:
                problems.append(f"{href} at {width}px: {trouble}")
            if empty := page.evaluate(EMPTY_HEADERS):
                problems.append(f"{href}: empty table header in {empty}")
            screenshot(page, f"layout-{_name(href)}-{width}")
    assert not problems, "\n".join(problems)


def test_axe_finds_nothing_serious_in_light_and_dark(page, pages):
    problems = []
    for scheme in SCHEMES:
        page.emulate_media(color_scheme=scheme)
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 800})
            for href in pages:
                _open(page, href)
                problems += [f"{href} {scheme} {width}px: {v}" for v in _axe(page)]
                if scheme == "dark":
                    screenshot(page, f"layout-{_name(href)}-{width}-dark")
    assert not problems, "\n".join(problems)


def _table_fits(page) -> dict:
    return page.evaluate(
        """() => {
          const wrap = document.querySelector('table.keys').closest('.table-wrap');
          const note = document.querySelector('#key-9 .note');
          const box = (el) => el.getBoundingClientRect();
          return {scroll: document.documentElement.scrollWidth, width: innerWidth,
                  wrapRight: box(wrap).right, noteLeft: box(note).left, noteRight: box(note).right,
                  noteLines: Math.round(
                    box(note).height / parseFloat(getComputedStyle(note).lineHeight))};
        }"""
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_a_failing_key_test_keeps_the_table_in_the_viewport(page, width):
    page.set_viewport_size({"width": width, "height": 800})
    page.goto("/keys")
    page.locator("#key-9").get_by_role("button", name="Test").click()
    note = page.locator("#key-9 .note.error")
    expect(note).to_contain_text("Key #9:")
    expect(note).to_contain_text("extremely_long_identifier")  # the provider's words are there
    seen = _table_fits(page)
    assert seen["scroll"] <= seen["width"], seen  # no page scroll
    assert seen["wrapRight"] <= seen["width"], seen  # the table's box stays on screen
    # The result is read where it is: inside the viewport, over several wrapped lines.
    assert seen["noteLeft"] >= 0 and seen["noteRight"] <= seen["width"], seen
    if width == 360:  # a phone wraps it (a desktop may fit the readable message on one line)
        assert seen["noteLines"] >= 2, seen
    if width == 1440:  # on a desktop the whole table fits, no sideways scroll in its box
        assert page.evaluate(
            "(() => { const w = document.querySelector('table.keys').closest('.table-wrap');"
            " return w.scrollWidth <= w.clientWidth; })()"
        )
    screenshot(page, f"layout-key-test-failed-{width}")
    page.locator("#key-9").get_by_role("button", name="Test").click()  # swaps, not stacks
    expect(page.locator("#key-9 tr.result")).to_have_count(1)


def test_theme_follows_the_system_and_the_button_overrides_it(page):
    background = "getComputedStyle(document.body).backgroundColor"
    page.emulate_media(color_scheme="dark")
    page.goto("/")
    dark = page.evaluate(background)
    page.emulate_media(color_scheme="light")
    light = page.evaluate(background)
    assert dark != light
    toggle = page.get_by_role("button", name=re.compile("^Theme: "))
    expect(toggle).to_have_text("Theme: auto")
    toggle.click()  # the system is light: the button goes dark
    expect(toggle).to_have_text("Theme: dark")
    assert page.evaluate(background) == dark
    page.goto("/keys")  # the choice stays with the browser
    assert page.evaluate(background) == dark
    screenshot(page, "layout-keys-dark-1440")
    page.get_by_role("button", name=re.compile("^Theme: ")).click()
    expect(page.get_by_role("button", name=re.compile("^Theme: "))).to_have_text("Theme: light")
    page.get_by_role("button", name=re.compile("^Theme: ")).click()
    expect(page.get_by_role("button", name=re.compile("^Theme: "))).to_have_text("Theme: auto")
    page.emulate_media(color_scheme="dark")
    assert page.evaluate(background) == dark  # auto again: the system decides


def test_the_menu_shows_every_link_on_a_phone_in_a_few_lines(page):
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto("/audit")
    menu = page.get_by_role("navigation", name="Main")
    expect(menu.get_by_role("link", name="Audit log")).to_have_attribute("aria-current", "page")
    links = menu.get_by_role("link")
    assert links.count() == 13  # with the Playground
    for n in range(links.count()):  # all of them in view: none scrolled away sideways
        expect(links.nth(n)).to_be_in_viewport()
    header = page.locator("header.top").bounding_box()
    assert header["height"] <= 140, header  # the review measured ~40 % of the screen


def test_the_login_page_fits_and_passes_axe_too(browser, site):
    context = browser.new_context(base_url=site.url)
    tab = context.new_page()
    problems = []
    try:
        for scheme in SCHEMES:
            tab.emulate_media(color_scheme=scheme)
            for width in WIDTHS:
                tab.set_viewport_size({"width": width, "height": 800})
                tab.goto("/login")
                expect(tab.get_by_role("heading", name="Log in to KeyRelay")).to_be_visible()
                if (trouble := _fits(tab)) is not None:
                    problems.append(f"{scheme} {width}px: {trouble}")
                problems += [f"{scheme} {width}px: {v}" for v in _axe(tab)]
                screenshot(tab, f"layout-login-{width}-{scheme}")
    finally:
        context.close()
    assert not problems, "\n".join(problems)
