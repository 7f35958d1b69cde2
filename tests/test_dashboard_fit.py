"""Every page of the admin dashboard and of the member portal fits a 360 px phone, a 768 px
tablet and a 1440 px desktop, in the light and the dark scheme, with nothing cut off
(tests/fit.py says what that means). The pages are listed from the app's URL map, so a page
added later is checked too, or must be named below with the reason it is not a page. The
data is what a busy gateway holds: provider keys of four kinds in every state with long
names and errors, client keys, routes, members, RovoDev accounts and a few hundred logged
requests with failed attempts. Screenshots land in test-artifacts/screenshots/fit-*."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import openai
import pytest
import urllib3
from playwright.sync_api import expect

from tests.browser import screenshot
from tests.conftest import ADMIN_PASSWORD, MASTER_KEY, MODELS, Admin, ManualClock, chat, live_app
from tests.fake_anthropic import FakeAnthropic
from tests.fake_rovodev import Account, FakeRovoDev
from tests.fake_upstream import FakeUpstream
from tests.fit import cut_off
from tests.members.conftest import PASSWORD, member_key
from tests.test_dashboard_layout import (
    Site,
    _seed_config,
    _seed_keys,
    _seed_traffic,
    _send,
    _settings,
)

WIDTHS = (360, 768, 1440)
SCHEMES = ("light", "dark")
ZONE = "America/New_York"  # not UTC: a time written in UTC by mistake shows
MEMBER = "a.rather.long.name.of.a.person@engineering.example.com"
ROVO_TOKENS = ("ATATT3xFfGF0fit-token-aaaaaaaaaaaa", "ATATT3xFfGF0fit-token-bbbbbbbbbbbb")
ROVO_EMAILS = ("platform-engineering-shared-account@atlassian.example.com", "dev@example.com")

# GET routes of the app that are not pages a person reads, and why.
NOT_PAGES = {
    "static": "files",
    "dashboard.export_config": "a YAML download",
    "dashboard.log_attempts": "a fragment: checked opened inside the request log",
    "auth.oidc_start": "a redirect to the identity provider",
    "auth.oidc_callback": "the identity provider's redirect back",
    "member_credits.came_back": "the payment provider's redirect back",
    "metrics.scrape": "Prometheus text",
    "system.healthz": "a probe",
    "system.readyz": "a probe",
    "openapi.docs": "the vendored API explorer (Swagger UI), not the dashboard's markup",
    "playground.attempts": "a fragment: loaded into the playground after a send",
}
FRAGMENTS = "partials."  # live parts of the overview: checked on the overview
WHO = {"portal.": "member", "auth.": "anonymous"}  # the rest: the admin


@dataclass
class Data:
    """What the pages need: a server full of data and the ids a page's URL takes."""

    url: str
    app: object
    ids: dict = field(default_factory=dict)


def _seed_kinds(admin: Admin, claude: FakeAnthropic, rovo: FakeRovoDev) -> None:
    """Keys of the other kinds: Anthropic and Gemini (untested), RovoDev accounts synced."""
    admin.add_key("sk-ant-fit-0001", claude.base_url, provider="anthropic", name="claude-main")
    admin.add_key(
        "AIza-fit-gemini-0002", "https://generativelanguage.googleapis.com/v1beta",
        provider="gemini", name="gemini-europe-west4-shared-quota-project-key",
    )  # fmt: skip
    for token, email in zip(ROVO_TOKENS, ROVO_EMAILS, strict=True):
        body = {"email": email, "apiToken": token, "baseUrl": rovo.base_url, "test": False}
        assert admin.call("POST", "/rovodev-keys", body).status == 201
    assert admin.call("POST", "/rovodev-keys/sync", {}).status == 200


def _more_traffic(url: str, n: int) -> None:
    """A few hundred more rows in the log: a busy day on the default profile."""
    master = openai.OpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
    for i in range(n):
        _send(master, chat(model=MODELS[i % 2], content=f"Question {i}"), "default")
    master.close()


def _member(app, admin: Admin, url: str) -> dict:
    """The long-addressed member with a key of their own and a request made with it."""
    member = next(m for m in admin.call("GET", "/members").json()["data"] if m["email"] == MEMBER)
    key = member_key(app, member["id"], "a laptop with a long name for its key")
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    sdk.chat.completions.create(**chat())
    sdk.close()
    return member


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The server and its data, seeded through the admin API and real traffic."""
    clock = ManualClock()
    http = urllib3.PoolManager(retries=False)
    instance = tmp_path_factory.mktemp("fit") / "instance"
    settings = {**_settings(instance, clock), "TIMEZONE": ZONE, "SIGNUP": "open"}
    rovo_accounts = {t: Account(e) for t, e in zip(ROVO_TOKENS, ROVO_EMAILS, strict=True)}
    with (
        FakeUpstream(models=MODELS) as fake,
        FakeAnthropic(["sk-ant-fit-0001"]) as claude,
        FakeRovoDev(rovo_accounts) as rovo,
        live_app(settings) as (app, live),
    ):
        admin = Admin(live.url, http)
        _seed_keys(admin, fake)
        _seed_traffic(Site(live.url, fake, clock, admin), _seed_config(admin))
        _seed_kinds(admin, claude, rovo)
        _more_traffic(live.url, 260)
        member = _member(app, admin, live.url)
        app.extensions["keyrelay"].books.flush()
        logs = admin.logs(limit=500)
        assert len(logs) >= 300, len(logs)
        failed = next(r for r in logs if r["status_code"] >= 400 and len(r["attempts"]) > 1)
        ids = {
            "key_id": 5,  # the long-named key (and a client key's id too)
            "route_id": 1,
            "member_id": member["id"],
            "request_id": failed["request_id"],
            "portal.request_detail": {"request_id": _member_request(app, member["id"])},
        }
        yield Data(live.url, app, ids)
    http.clear()


def _member_request(app, member_id: int) -> str | None:
    """The request id of the member's own request (their page shows only theirs)."""
    from extensions import db
    from models import ClientKey, RequestLog

    with app.app_context():
        keys = db.session.query(ClientKey.id).filter(ClientKey.member_id == member_id)
        row = db.session.query(RequestLog).filter(RequestLog.client_key_id.in_(keys)).first()
        return row.request_id if row else None


def pages(app, ids: dict) -> dict[str, list[str]]:
    """Every page of the app by who reads it: admin, member, anonymous (from the URL map)."""
    found: dict[str, list[str]] = {"admin": [], "member": [], "anonymous": []}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        endpoint = rule.endpoint
        if "GET" not in rule.methods or rule.rule.startswith(("/v1", "/api/", "/static")):
            continue
        if endpoint in NOT_PAGES or endpoint.startswith(FRAGMENTS):
            continue
        values = {a: ids.get(endpoint, {}).get(a, ids.get(a)) for a in rule.arguments}
        missing = [a for a, v in values.items() if v is None]
        assert not missing, f"{rule.rule}: no id for {missing}: add one to the data"
        with app.test_request_context():
            from flask import url_for

            url = url_for(endpoint, **values)
        if endpoint == "dashboard.find_request":
            url += "?id=" + ids["request_id"][:12]
        if endpoint == "dashboard.logs":  # the failures too: their attempts are long
            found["admin"].append(url + "?status=error")
        who = next((w for prefix, w in WHO.items() if endpoint.startswith(prefix)), "admin")
        found[who].append(url)
    return found


def _tab(browser, data: Data, username: str | None, password: str):
    context = browser.new_context(base_url=data.url, viewport={"width": 1440, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.problems = []
    tab.on("pageerror", lambda e: tab.problems.append(str(e)))
    if username:
        tab.goto("/login")
        tab.get_by_label("Username").fill(username)
        tab.get_by_label("Password").fill(password)
        tab.get_by_role("button", name="Log in").click()
        expect(tab.get_by_role("heading", level=1)).not_to_have_text("Log in to KeyRelay")
    return context, tab


@pytest.fixture(scope="module")
def tabs(browser, data):
    """A logged-in tab per reader: the admin, the member, and no one."""
    opened = {
        "admin": _tab(browser, data, "admin", ADMIN_PASSWORD),
        "member": _tab(browser, data, MEMBER, PASSWORD),
        "anonymous": _tab(browser, data, None, ""),
    }
    yield {who: tab for who, (_, tab) in opened.items()}
    for context, _ in opened.values():
        context.close()


def _open(tab, url: str) -> None:
    """Load a page as a reader would see it; on the request log, open a failure's attempts."""
    response = tab.goto(url)
    assert response.status == 200, (url, response.status)
    if url.startswith("/logs"):
        rows = tab.locator("tr[data-log-id]")
        several = rows.filter(has=tab.get_by_role("button", name=re.compile(r"^[2-9] ")))
        for row in (rows.first, several.first) if several.count() else (rows.first,):
            row.get_by_role("button").click()  # the newest request's attempts, and a failover's
            log_id = row.get_attribute("data-log-id")
            expect(tab.locator(f"#attempts-{log_id} table.attempts")).to_be_visible()


def _name(url: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", url.lower()).strip("-")[:60] or "overview"


def test_the_page_list_covers_the_dashboard_and_the_portal(data):
    listed = pages(data.app, data.ids)
    assert len(listed["admin"]) >= 18, listed
    assert {"/analytics", "/keys", "/rovodev", "/members", "/logs", "/"} <= {
        u.split("?")[0] for urls in listed.values() for u in urls
    }


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_with_nothing_cut_off(tabs, data, width, scheme):
    problems, checked = [], 0
    for who, urls in pages(data.app, data.ids).items():
        tab = tabs[who]
        tab.emulate_media(color_scheme=scheme)
        tab.set_viewport_size({"width": width, "height": 900})
        for url in urls:
            _open(tab, url)
            checked += 1
            found = cut_off(tab)
            problems += [f"{url} ({who}): {p}" for p in found[:8]]
            if found or scheme == "light":
                screenshot(tab, f"fit-{_name(url)}-{width}-{scheme}")
        assert tab.problems == [], tab.problems
    assert checked >= 20
    assert not problems, f"{len(problems)} cut off at {width}px {scheme}:\n" + "\n".join(problems)
