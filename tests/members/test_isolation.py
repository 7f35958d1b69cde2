"""A signed-in member is refused (403) on every admin page and every /api/admin route of
the app's URL map, whatever the method; member forms need their CSRF token."""

from __future__ import annotations

import re

import pytest

from tests.members.conftest import PASSWORD, Browser, new_member

# Filled into a rule's path parameters: an object of that kind need not exist, the
# refusal comes first.
SAMPLES = {"int": "1", "default": "x", "path": "x"}
CONVERTER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def _path(rule: str) -> str:
    return CONVERTER.sub(lambda m: SAMPLES.get(m.group(1) or "default", "x"), rule)


# The member's own blueprints: their dashboard, its key API, buying credits.
MEMBERS_OWN = {"portal", "portal_api", "member_credits"}


def _routes(app) -> list[tuple[str, str, str]]:
    """(method, path, endpoint) of every route of the app, HEAD and OPTIONS aside."""
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, _path(rule.rule), rule.endpoint))
    return found


def _admin_routes(app, anonymous: Browser) -> list[tuple[str, str, str]]:
    """The routes that are the admins': under /api/admin (but the public API document),
    and every page an anonymous visitor is sent to the login page from."""
    from gateway.admin.openapi import PUBLIC

    chosen = []
    for method, path, endpoint in _routes(app):
        if path.startswith("/api/admin/"):
            if endpoint not in PUBLIC:
                chosen.append((method, path, endpoint))
            continue
        if method != "GET" or endpoint == "static" or endpoint.split(".")[0] in MEMBERS_OWN:
            continue
        answer = anonymous.get(path, allow_redirects=False)
        if answer.status_code == 302 and "/login" in answer.headers["Location"]:
            chosen.append((method, path, endpoint))
    # Each page's changes too (POST routes of the same blueprints).
    blueprints = {endpoint.split(".")[0] for _, _, endpoint in chosen}
    for method, path, endpoint in _routes(app):
        ours = method != "GET" and endpoint.split(".")[0] in blueprints
        if ours and (method, path, endpoint) not in chosen:
            chosen.append((method, path, endpoint))
    return chosen


@pytest.fixture
def member_browser(admin, server):
    new_member(admin, "iso@example.com")
    opened = Browser(server.url)
    assert opened.log_in("iso@example.com").url.endswith("/analytics")
    yield opened
    opened.close()


def test_a_member_is_refused_every_admin_page_and_api_route(app, server, member_browser):
    anonymous = Browser(server.url)
    routes = _admin_routes(app, anonymous)
    anonymous.close()
    pages = [r for r in routes if not r[1].startswith("/api/")]
    api = [r for r in routes if r[1].startswith("/api/")]
    # The loop covers the whole admin surface, not a hand-picked few.
    assert len(pages) > 40 and len(api) > 40
    assert ("GET", "/members", "dashboard_members.members") in pages
    assert ("GET", "/api/admin/members", "admin_api.list_members") in api
    token = {"X-CSRFToken": member_browser.token}
    wrong = []
    for method, path, _endpoint in routes:
        answer = member_browser.session.request(
            method, server.url + path, data={"csrf_token": member_browser.token},
            headers=token, allow_redirects=False, timeout=10,
        )  # fmt: skip
        if answer.status_code != 403:
            wrong.append((method, path, answer.status_code))
    assert wrong == []
    # Still signed in and at home: the refusals changed nothing.
    assert member_browser.get("/analytics").status_code == 200


def test_refusals_are_readable(member_browser, server):
    page = member_browser.get("/keys")
    assert page.status_code == 403 and "Your own dashboard is at /analytics" in page.text
    api = member_browser.session.get(server.url + "/api/admin/keys", timeout=10)
    assert api.status_code == 403
    assert api.json()["error"]["type"] == "permission_error"
    assert "members use /api/keys/manage" in api.json()["error"]["message"]


def test_a_member_sees_only_their_own_navigation(member_browser):
    home = member_browser.get("/analytics").text
    assert "Your dashboard" in home
    for admin_link in ('href="/keys"', 'href="/members"', 'href="/users"', 'href="/logs"'):
        assert admin_link not in home


def test_member_forms_need_the_csrf_token(member_browser):
    # Logging out is a member form: without the token it is refused and the session stays.
    refused = member_browser.post("/logout", token=False, allow_redirects=False)
    assert refused.status_code == 400
    assert member_browser.get("/analytics", allow_redirects=False).status_code == 200
    done = member_browser.post("/logout", allow_redirects=False)
    assert done.status_code == 302
    assert member_browser.get("/analytics", allow_redirects=False).status_code == 302


def test_a_member_api_session_with_the_csrf_header_is_still_refused(member_browser, server):
    answer = member_browser.session.post(
        server.url + "/api/admin/members",
        json={"email": "sneaky@example.com", "password": PASSWORD},
        headers={"X-CSRFToken": member_browser.token},
        timeout=10,
    )
    assert answer.status_code == 403
