"""Dashboard auth (F50): first admin, hashed passwords, roles, CSRF, throttling, cookies,
security headers, expired sessions in htmx, and the admin JSON API with a session."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app import create_app
from extensions import db
from models import AuditEntry, LoginThrottle, ProviderKey, User
from tests.conftest import ADMIN_PASSWORD, CSRF_FIELD, LiveServer, Web, make_viewer


def _users(app) -> list[User]:
    with app.app_context():
        users = db.session.scalars(select(User)).all()
        db.session.expunge_all()
        return users


def test_first_admin_from_the_setting_with_a_hashed_password(app):
    [user] = _users(app)
    assert (user.username, user.role) == ("admin", "admin")
    assert user.password_hash.startswith("scrypt:")
    assert ADMIN_PASSWORD not in user.password_hash
    Web(app)  # logs in with it


def test_generated_admin_password_is_printed_once_and_works(settings, capsys):
    settings.pop("ADMIN_PASSWORD")
    first = create_app(settings)
    printed = capsys.readouterr().err
    match = re.search(r"first admin 'admin' created with password\s+(\S+)", printed)
    assert match, printed
    Web(first, "admin", match.group(1))
    first.extensions["keyrelay"].close()
    second = create_app(settings)  # same instance: no new admin, nothing printed
    assert "password" not in capsys.readouterr().err
    assert len(_users(second)) == 1
    second.extensions["keyrelay"].close()


def test_cli_creates_admins_and_viewers_and_changes_passwords(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create-admin", "ops", "--password", "ops-pass-12"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        args=["users", "create", "reader", "--role", "viewer", "--password", "read-pass-1"]
    )
    assert result.exit_code == 0, result.output
    assert "reader" in runner.invoke(args=["users", "list"]).output
    short = runner.invoke(args=["users", "create", "x", "--password", "short"])
    assert short.exit_code != 0 and "at least 8" in short.output
    roles = {u.username: u.role for u in _users(app)}
    assert roles == {"admin": "admin", "ops": "admin", "reader": "viewer"}
    ops = Web(app, "ops", "ops-pass-12")
    assert ops.get("/").status_code == 200
    changed = runner.invoke(args=["users", "set-password", "ops", "--password", "new-pass-123"])
    assert changed.exit_code == 0, changed.output
    # The session opened with the old password ends.
    assert ops.get("/").status_code == 302
    Web(app, "ops", "new-pass-123")


@pytest.mark.both_databases
def test_wrong_password_is_refused_with_a_message_and_audited(app):
    web = Web(app)
    web.client.post("/logout", data={"csrf_token": web.token})
    response = web.login("admin", "not-the-password")
    assert response.status_code == 401
    assert "Wrong username or password." in response.text
    assert 'value="admin"' in response.text  # the username stays typed
    assert web.get("/").status_code == 302
    with app.app_context():
        actions = db.session.scalars(select(AuditEntry.action)).all()
    assert "login.failed" in actions and "login" in actions and "logout" in actions


def test_pages_need_a_login_and_come_back_after_it(app):
    client = app.test_client()
    for path in ("/", "/keys", "/logs", "/usage", "/profiles", "/audit", "/users"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
    page = client.get("/login?next=/logs")
    token = CSRF_FIELD.search(page.text).group(1)
    data = {"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token}
    assert client.post("/login?next=/logs", data=data).headers["Location"] == "/logs"


def test_login_never_redirects_off_site(app):
    client = app.test_client()
    token = CSRF_FIELD.search(client.get("/login").text).group(1)
    data = {"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token}
    response = client.post("/login?next=//evil.example/x", data=data)
    assert response.headers["Location"] == "/"


@pytest.mark.both_databases
def test_throttling_slows_then_locks_per_address_and_per_user(settings, clock):
    settings.update(LOGIN_SLOW_AFTER=2, LOGIN_LOCK_AFTER=4, LOGIN_DELAY=0.2)
    app = create_app(settings)
    web = Web(app)
    web.client.post("/logout", data={"csrf_token": web.token})
    for _ in range(2):
        assert web.login("admin", "wrong-password").status_code == 401
    assert clock.slept == []
    assert web.login("admin", "wrong-password").status_code == 401
    assert clock.slept == [0.2]  # the third failure is slowed down
    assert web.login("admin", "wrong-password").status_code == 401  # fourth: lock starts
    locked = web.login("admin", ADMIN_PASSWORD)  # even the right password, for now
    assert locked.status_code == 429
    assert "Too many failed logins. Try again in 15 minutes." in locked.text
    # The username is locked from another address too; another user from elsewhere is not.
    other = app.test_client()
    page = other.get("/login", environ_base={"REMOTE_ADDR": "10.9.8.7"})
    token = CSRF_FIELD.search(page.text).group(1)
    data = {"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token}
    assert (
        other.post("/login", data=data, environ_base={"REMOTE_ADDR": "10.9.8.7"}).status_code == 429
    )
    clock.advance(minutes=16)
    assert web.login("admin", ADMIN_PASSWORD).status_code == 302
    app.extensions["keyrelay"].close()


def test_forms_and_htmx_posts_without_a_csrf_token_are_refused(app, web):
    response = web.client.post("/keys", data={"name": "x", "secret": "sk-nocsrf-12345678"})
    assert response.status_code == 400
    assert "Reload the page and try again" in response.text
    htmx = web.client.post("/keys/1/toggle", headers={"HX-Request": "true"})
    assert htmx.status_code == 400 and htmx.headers["HX-Retarget"] == "#flash"
    login = app.test_client().post("/login", data={"username": "admin", "password": "x"})
    assert login.status_code == 400
    with app.app_context():
        assert db.session.scalar(select(ProviderKey.id)) is None


def test_session_cookie_flags_and_secure_over_https(app):
    client = app.test_client()
    token = CSRF_FIELD.search(client.get("/login").text).group(1)
    data = {"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token}
    cookie = client.post("/login", data=data).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure = app.test_client()
    page = secure.get("/login", base_url="https://localhost")
    token = CSRF_FIELD.search(page.text).group(1)
    data["csrf_token"] = token
    answer = secure.post(
        "/login",
        data=data,
        base_url="https://localhost",
        headers={"Referer": "https://localhost/login"},
    )
    assert answer.status_code == 302
    assert "Secure" in answer.headers["Set-Cookie"] and "HttpOnly" in answer.headers["Set-Cookie"]
    # Over HTTPS a post from another site is refused even with a valid token (Referer check).
    fresh = CSRF_FIELD.search(secure.get("/", base_url="https://localhost").text).group(1)
    forged = secure.post(
        "/logout",
        base_url="https://localhost",
        data={"csrf_token": fresh},
        headers={"Referer": "https://evil.example/"},
    )
    assert forged.status_code == 400
    assert secure.get("/", base_url="https://localhost").status_code == 200  # still logged in


def test_security_headers_on_every_page(app, web):
    for response in (app.test_client().get("/login"), web.get("/"), web.get("/keys")):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = web.get("/").text
    assert "<script>" not in page and "style=" not in page and " on" + "click" not in page


def test_expired_session_in_htmx_sends_the_page_to_login(app):
    response = app.test_client().get(
        "/partials/cards",
        headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/logs?model=x"},
    )
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=/logs?model%3Dx"
    assert "<form" not in response.text


def test_viewer_reads_everything_and_changes_nothing(app, web):
    web.post("/profiles", {"name": "team-a", "strategy": "default"})
    viewer = make_viewer(app)
    for path in ("/", "/keys", "/profiles", "/logs", "/usage", "/audit", "/partials/key-bars"):
        assert viewer.get(path).status_code == 200, path
    keys_page = viewer.get("/keys").text
    assert "Add a key" not in keys_page and "Bulk import" not in keys_page
    assert viewer.get("/users").status_code == 403
    refused = viewer.post("/profiles", {"name": "team-b"})
    assert refused.status_code == 403
    assert "Viewers can look but not change anything" in refused.text
    assert viewer.post("/users", {"username": "x", "password": "12345678"}).status_code == 403
    names = [p for p in re.findall(r'data-profile="([^"]+)"', viewer.get("/profiles").text)]
    assert names == ["default", "team-a"]


def test_admin_api_accepts_a_session(app, web, fake):
    viewer = make_viewer(app)
    body = {
        "name": "s",
        "provider": "openai",
        "secret": "sk-session-1234567890",
        "base_url": fake.base_url,
    }
    assert web.client.get("/api/admin/keys").status_code == 200
    no_token = web.client.post("/api/admin/keys", json=body)
    assert no_token.status_code == 403 and no_token.json["error"]["code"] == "csrf_failed"
    created = web.client.post("/api/admin/keys", json=body, headers={"X-CSRFToken": web.token})
    assert created.status_code == 201, created.json
    assert viewer.client.get("/api/admin/keys").json["data"][0]["secret"] == "sk-sess…7890"
    refused = viewer.client.post(
        "/api/admin/keys",
        json={**body, "secret": "sk-other-0987654321"},
        headers={"X-CSRFToken": viewer.token},
    )
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert app.test_client().get("/api/admin/keys").status_code == 401
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "key.create"))
    assert entry.actor == "admin" and "sk-session" not in str(entry.detail)


@pytest.mark.parametrize("path", ["/logout"])
def test_logout_is_a_post_with_a_token(web, path):
    assert web.get(path).status_code == 405
    assert web.client.post(path).status_code == 400
    assert web.get("/").status_code == 200
    assert web.post(path).status_code == 302
    assert web.get("/").status_code == 302


def test_behind_a_trusted_proxy_https_and_the_client_address_count(settings):
    settings.update(TRUSTED_PROXIES=1, LOGIN_SLOW_AFTER=5, LOGIN_LOCK_AFTER=2)
    app = create_app(settings)
    client = app.test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    # Over HTTPS flask-wtf also checks that the form came from this site (Referer).
    forwarded["Referer"] = "https://localhost/login"
    token = CSRF_FIELD.search(client.get("/login", headers=forwarded).text).group(1)
    data = {"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token}
    answer = client.post("/login", data=data, headers=forwarded)
    assert answer.status_code == 302
    assert "Secure" in answer.headers["Set-Cookie"]
    # Failures are counted for the forwarded address, not for the proxy's own.
    other = app.test_client()
    for _ in range(2):
        token = CSRF_FIELD.search(other.get("/login", headers=forwarded).text).group(1)
        wrong = {"username": "nobody", "password": "wrong-pass", "csrf_token": token}
        assert other.post("/login", data=wrong, headers=forwarded).status_code == 401
    with app.app_context():
        scopes = set(db.session.scalars(select(LoginThrottle.scope)))
    assert scopes == {"ip:203.0.113.9", "user:nobody"}
    app.extensions["keyrelay"].close()


def test_head_requests_are_not_failed_logins(settings, clock, http):
    """Claude Code sends HEAD / (and follows to HEAD /login) on every run, and a monitor
    may do `curl -I`: only a submitted login form counts towards the lock."""
    settings.update(LOGIN_SLOW_AFTER=2, LOGIN_LOCK_AFTER=4)
    app = create_app(settings)
    live = LiveServer(app)
    try:
        answers = []
        for _ in range(20):
            answers.append(http.request("HEAD", f"{live.url}/", redirect=False).status)
            answers.append(http.request("HEAD", f"{live.url}/login", redirect=False).status)
            answers.append(http.request("HEAD", f"{live.url}/login?next=/", redirect=True).status)
        assert set(answers) <= {200, 302}, answers
        with app.app_context():
            assert db.session.scalars(select(LoginThrottle)).all() == []
        assert clock.slept == []
        Web(app)  # logs in as the admin (asserts the redirect to the dashboard)
    finally:
        live.close()
        app.extensions["keyrelay"].close()
