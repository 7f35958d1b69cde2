"""Single sign-on with OpenID Connect against a real provider (npm `oidc-provider`, started
by tests/oidc_provider.py): the browser's part is a `requests.Session` that follows the
redirects and fills the provider's login form; one test clicks through in Chromium."""

from __future__ import annotations

import re
import socket
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from sqlalchemy import select

from extensions import db
from gateway import sso
from gateway.admin import accounts
from models import AuditEntry, Member, User
from tests.oidc_provider import CALLBACK_PATH, sign_in, stop_before_callback

ADMIN_EMAIL = "boss@example.com"


@pytest.fixture
def settings(settings, oidc):
    settings.update(
        OIDC_ISSUER=oidc.client.issuer,
        OIDC_CLIENT_ID=oidc.client.client_id,
        OIDC_CLIENT_SECRET=oidc.client.client_secret,
        OIDC_ADMIN_EMAILS=f"{ADMIN_EMAIL}, other-boss@example.com",
        OIDC_ALLOWED_DOMAINS="example.com",
    )
    return settings


@pytest.fixture
def browser_session():
    with requests.Session() as session:
        yield session


def start(server) -> str:
    return f"{server.url}/login/oidc"


def error_of(response) -> str:
    match = re.search(r'id="login-error">([^<]*)<', response.text)
    assert match, response.text[:500]
    return match.group(1).replace("&#39;", "'")


def users(app) -> dict[str, str]:
    with app.app_context():
        return {user.username: user.role for user in db.session.scalars(select(User))}


def audit_entries(app) -> list[tuple[str, str | None, dict | None]]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(row.action, row.target, row.detail) for row in rows]


def signed_in(server, session: requests.Session) -> bool:
    answer = session.get(f"{server.url}/", allow_redirects=False, timeout=10)
    return answer.status_code == 200


# -- the provider itself --------------------------------------------------------------


def test_the_provider_publishes_discovery_and_its_keys(oidc):
    document = requests.get(f"{oidc.issuer}/.well-known/openid-configuration", timeout=10)
    assert document.status_code == 200
    meta = document.json()
    assert meta["issuer"] == oidc.issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"email", "email_verified"} <= set(meta["claims_supported"])
    keys = requests.get(meta["jwks_uri"], timeout=10).json()["keys"]
    assert keys and all("d" not in key for key in keys)  # public keys only


def test_the_provider_refuses_an_unknown_redirect(oidc, browser_session):
    query = urlencode(
        {
            "client_id": oidc.client.client_id,
            "response_type": "code",
            "scope": "openid email",
            "redirect_uri": "http://evil.test/login/oidc/callback",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        }
    )
    answer = browser_session.get(f"{oidc.issuer}/auth?{query}", timeout=10)
    assert answer.status_code == 400
    assert "redirect_uri" in answer.text


# -- signing in -----------------------------------------------------------------------


def test_the_login_page_offers_sso_only_when_set_up(app, server, browser_session, settings):
    page = browser_session.get(f"{server.url}/login", timeout=10)
    assert "Sign in with SSO" in page.text
    assert 'href="/login/oidc"' in page.text
    app.config["OIDC_ISSUER"] = None
    assert "Sign in with SSO" not in browser_session.get(f"{server.url}/login").text
    answer = browser_session.get(start(server), timeout=10)
    assert answer.status_code == 404
    assert error_of(answer) == "Single sign-on is not set up on this server."


def test_an_admin_email_signs_in_as_a_new_admin_and_reaches_the_dashboard(
    app, server, browser_session
):
    answer = sign_in(browser_session, start(server), ADMIN_EMAIL)
    assert answer.status_code == 200
    assert answer.url == f"{server.url}/"
    assert "Overview" in answer.text and ADMIN_EMAIL in answer.text
    assert users(app)[ADMIN_EMAIL] == "admin"
    assert ("login", f"user:{ADMIN_EMAIL}", {"method": "sso"}) in audit_entries(app)
    # The second time it is the same account, and `next` is honoured.
    browser_session.cookies.clear()
    answer = sign_in(browser_session, f"{start(server)}?next=/keys", ADMIN_EMAIL.upper())
    assert answer.url == f"{server.url}/keys"
    assert list(users(app)).count(ADMIN_EMAIL) == 1


def test_an_existing_user_signs_in_as_themselves(app, server, browser_session, clock):
    with app.app_context():
        accounts.create_user(db.session, "vera@corp.test", "viewer-pass-1", "viewer", clock.now())
        db.session.commit()
    answer = sign_in(browser_session, start(server), "Vera@corp.test")
    assert answer.url == f"{server.url}/"
    assert users(app) == {"admin": "admin", "vera@corp.test": "viewer"}


@pytest.mark.parametrize(
    ("email", "words"),
    [
        ("eve@elsewhere.test", "eve@elsewhere.test may not sign in here"),
        ("eve@sub.example.com", "eve@sub.example.com may not sign in here"),
        ("unverified:dev@example.com", "dev@example.com is not verified"),
    ],
    ids=["unknown domain", "a subdomain of an allowed one", "unverified email"],
)
def test_who_may_not_come_in_reads_why(app, server, browser_session, email, words):
    before = users(app)
    answer = sign_in(browser_session, start(server), email)
    assert answer.status_code == 403
    assert words in error_of(answer)
    assert users(app) == before
    assert not signed_in(server, browser_session)
    assert audit_entries(app)[-1][0] == "login.failed"


def test_an_allowed_domain_signs_in_as_a_new_member_with_the_defaults(app, server, browser_session):
    answer = sign_in(browser_session, f"{start(server)}?next=/keys", "Dev@Example.com")
    assert answer.status_code == 200
    assert answer.url == f"{server.url}/analytics"  # a member's home, whatever `next` said
    assert "Your dashboard" in answer.text
    assert users(app)["dev@example.com"] == "member"
    with app.app_context():
        member = db.session.scalar(select(Member))
        assert member.user.email == "dev@example.com"
        assert (member.balance_micros, member.budget_micros) == (5_000_000, 10_000_000)
        assert (member.budget_period, member.rpm_limit, member.tpm_limit) == ("30d", 100, 10000)
        assert (member.max_keys, member.profile.name) == (5, "default")
    created = [e for e in audit_entries(app) if e[0] == "member.create"]
    detail = {"email": "dev@example.com", "via": "sso", "balance": "5.000000"}
    assert created == [("member.create", f"member:{member.user_id}", detail)]
    # The next sign-in is the same member; the admin pages stay closed to them.
    browser_session.cookies.clear()
    again = sign_in(browser_session, start(server), "dev@example.com")
    assert again.url == f"{server.url}/analytics"
    assert list(users(app)).count("dev@example.com") == 1
    assert browser_session.get(f"{server.url}/keys", timeout=10).status_code == 403


def test_a_tampered_state_is_refused(app, server, browser_session):
    callback = stop_before_callback(browser_session, start(server), ADMIN_EMAIL)
    parts = urlsplit(callback)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    query["state"] = query["state"][:-2] + ("AA" if not query["state"].endswith("AA") else "BB")
    answer = browser_session.get(f"{server.url}{parts.path}?{urlencode(query)}", timeout=10)
    assert answer.status_code == 400
    assert error_of(answer) == "This sign-in did not start here, or it expired. Sign in again."
    # A refused answer ends the sign-in: the genuine one cannot follow it.
    answer = browser_session.get(callback, timeout=10)
    assert error_of(answer) == "This sign-in was already used or has expired. Sign in again."
    assert not signed_in(server, browser_session)
    assert ADMIN_EMAIL not in users(app)


STARTED_ELSEWHERE = "This sign-in did not start here, or it expired. Sign in again."


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", STARTED_ELSEWHERE),
        ("code=x", STARTED_ELSEWHERE),
        ("code=x&state=%C3%A9%00", STARTED_ELSEWHERE),
        (f"code=x&state={'s' * 20000}", STARTED_ELSEWHERE),
        ("error=access_denied&error_description=Call+us", STARTED_ELSEWHERE),
        ("state={state}", "The sign-in provider sent no authorization code."),
        ("state={state}&error=access_denied", "The sign-in provider refused: access_denied."),
        (
            "state={state}&error=access_denied&error_description=%3Cb%3Eno%3C/b%3E",
            "The sign-in provider refused: &lt;b&gt;no&lt;/b&gt;.",
        ),
    ],
    ids=[
        "nothing",
        "no state",
        "odd state",
        "huge state",
        "refusal without state",
        "no code",
        "refused",
        "refused with markup",
    ],
)
def test_odd_callbacks_are_readable_400s(server, browser_session, query, message):
    started = browser_session.get(start(server), allow_redirects=False, timeout=10)
    assert started.status_code == 302
    state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    query = query.replace("{state}", state)
    answer = browser_session.get(f"{server.url}{CALLBACK_PATH}?{query}", timeout=10)
    assert answer.status_code == 400
    assert error_of(answer) == message
    assert "Traceback" not in answer.text


def test_a_replayed_callback_is_refused(app, server, browser_session):
    callback = stop_before_callback(browser_session, start(server), ADMIN_EMAIL)
    assert browser_session.get(callback, timeout=10).url == f"{server.url}/"
    # The same answer again, from the signed-in browser and from another one.
    again = browser_session.get(callback, timeout=10)
    assert again.status_code == 400
    assert error_of(again) == "This sign-in was already used or has expired. Sign in again."
    with requests.Session() as other:
        stolen = other.get(callback, timeout=10)
        assert stolen.status_code == 400
        assert error_of(stolen) == "This sign-in was already used or has expired. Sign in again."
        assert not signed_in(server, other)


def test_a_code_used_twice_is_refused_by_the_provider(app, server, browser_session):
    """A second sign-in's state with the first sign-in's code: the provider refuses it."""
    callback = stop_before_callback(browser_session, start(server), ADMIN_EMAIL)
    assert browser_session.get(callback, timeout=10).url == f"{server.url}/"
    browser_session.cookies.clear()
    fresh = stop_before_callback(browser_session, start(server), ADMIN_EMAIL)
    state = parse_qs(urlsplit(fresh).query)["state"][0]
    code = parse_qs(urlsplit(callback).query)["code"][0]
    query = urlencode({"code": code, "state": state})
    answer = browser_session.get(f"{server.url}{CALLBACK_PATH}?{query}", timeout=10)
    assert answer.status_code == 400
    assert "did not accept this sign-in" in error_of(answer)
    assert not signed_in(server, browser_session)


def test_an_id_token_for_another_nonce_is_refused(oidc):
    """The provider's genuine answer, checked against a sign-in that sent another nonce."""
    settings = sso.SsoSettings(oidc.issuer, oidc.client.client_id, oidc.client.client_secret)
    url, pending = sso.start(settings, f"http://127.0.0.1:9{CALLBACK_PATH}")
    with requests.Session() as browser:
        callback = stop_before_callback(browser, url, ADMIN_EMAIL)
    args = {key: values[0] for key, values in parse_qs(urlsplit(callback).query).items()}
    other = {**pending.to_dict(), "nonce": "a-nonce-this-sign-in-never-sent"}
    with pytest.raises(sso.SsoError) as refused:
        sso.finish(settings, other, args)
    assert refused.value.status == 400
    assert str(refused.value).startswith("The sign-in provider's ID token is not valid")
    assert "nonce" in str(refused.value)


def test_the_same_answer_with_its_own_nonce_signs_in(oidc):
    """The counterpart: the answer checked against the sign-in that asked for it."""
    settings = sso.SsoSettings(oidc.issuer, oidc.client.client_id, oidc.client.client_secret)
    url, pending = sso.start(settings, f"http://127.0.0.1:9{CALLBACK_PATH}")
    with requests.Session() as browser:
        callback = stop_before_callback(browser, url, ADMIN_EMAIL.upper())
    args = {key: values[0] for key, values in parse_qs(urlsplit(callback).query).items()}
    assert sso.finish(settings, pending.to_dict(), args) == ADMIN_EMAIL


def test_a_provider_that_cannot_be_reached_is_a_readable_502(app, server, browser_session):
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        app.config["OIDC_ISSUER"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
        answer = browser_session.get(start(server), timeout=10)
    assert answer.status_code == 502
    assert error_of(answer) == "The sign-in provider cannot be reached. Try again later."


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        ("keyrelay", "The sign-in provider answered 404. Try again later."),
        ("localhost", "The sign-in provider names another issuer than the one configured."),
    ],
    ids=["not a provider", "another issuer"],
)
def test_a_misconfigured_issuer_is_a_readable_502(
    app, server, oidc, browser_session, issuer, message
):
    port = urlsplit(oidc.issuer).port
    app.config["OIDC_ISSUER"] = server.url if issuer == "keyrelay" else f"http://localhost:{port}"
    answer = browser_session.get(start(server), timeout=10)
    assert answer.status_code == 502
    assert error_of(answer) == message


def test_a_missing_client_secret_is_a_readable_502(app, server, browser_session):
    app.config["OIDC_CLIENT_SECRET"] = ""
    answer = browser_session.get(start(server), timeout=10)
    assert answer.status_code == 502
    assert error_of(answer) == (
        "Single sign-on is not fully set up: the client id or secret is missing."
    )


def test_the_provider_going_down_during_a_sign_in_is_a_readable_502(app, server, browser_session):
    callback = stop_before_callback(browser_session, start(server), ADMIN_EMAIL)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        app.config["OIDC_ISSUER"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
        answer = browser_session.get(callback, timeout=10)
    assert answer.status_code == 502
    assert "cannot be reached" in error_of(answer)
    assert not signed_in(server, browser_session)


def test_failed_sso_sign_ins_lock_the_address_like_failed_logins(
    app, server, browser_session, settings
):
    app.config["LOGIN_LOCK_AFTER"] = 2
    for _ in range(2):
        answer = browser_session.get(f"{server.url}{CALLBACK_PATH}?code=x&state=y", timeout=10)
        assert answer.status_code == 400
    answer = sign_in(browser_session, start(server), ADMIN_EMAIL)
    assert answer.status_code == 429
    assert error_of(answer).startswith("Too many failed logins. Try again in 15 minutes")
    assert ADMIN_EMAIL not in users(app)
    failed = [entry for entry in audit_entries(app) if entry[0] == "login.failed"]
    assert failed == [("login.failed", None, {"method": "sso"})] * 2


# -- in a browser ---------------------------------------------------------------------


def test_sign_in_with_sso_in_chromium(app, server):
    """Click "Sign in with SSO", fill the provider's login form, land on the overview."""
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import FLAGS, ensure_chromium, screenshot

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=ensure_chromium(), args=FLAGS)
        try:
            page = chromium.new_context(base_url=server.url).new_page()
            page.set_default_timeout(10_000)
            page.goto("/login?next=/keys")
            screenshot(page, "login-sso")
            page.get_by_role("link", name="Sign in with SSO").click()
            page.locator("input[name=login]").fill(ADMIN_EMAIL)
            page.locator("input[name=password]").fill("any")
            page.locator("button[type=submit]").click()
            expect(page).to_have_url(f"{server.url}/keys")
            expect(page.get_by_role("heading", name="Provider keys")).to_be_visible()
        finally:
            chromium.close()
    assert users(app)[ADMIN_EMAIL] == "admin"
