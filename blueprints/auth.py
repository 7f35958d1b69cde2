"""Logging in and out of the dashboard (a password, or single sign-on with OpenID Connect
through gateway/sso.py), with login throttling (F50)."""

from __future__ import annotations

import math
from datetime import timedelta
from urllib.parse import urlparse

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from blueprints.common import gateway
from blueprints.web import admin, no_cache, register_csrf_error
from extensions import csrf, db
from gateway import members, sso
from gateway.admin import accounts, sessions
from gateway.admin import members as member_commands
from gateway.admin.context import Admin
from gateway.admin.errors import InputError

bp = Blueprint("auth", __name__)
bp.after_request(no_cache)
register_csrf_error(bp)


def _policy() -> accounts.ThrottlePolicy:
    config = current_app.config
    return accounts.ThrottlePolicy(
        slow_after=config["LOGIN_SLOW_AFTER"],
        lock_after=config["LOGIN_LOCK_AFTER"],
        lock_for=timedelta(minutes=config["LOGIN_LOCK_MINUTES"]),
        delay=config["LOGIN_DELAY"],
    )


def _safe_next(target: str | None, user=None) -> str:
    """Only a path on this site (no `//evil`, no scheme) may follow the login; a member
    goes to their own dashboard (/analytics) whatever the link asked."""
    if user is not None and user.is_member:
        home = url_for("portal.analytics")
        return target if target and target.split("?")[0] == home else home
    if target and target.startswith("/") and not target.startswith("//"):
        parsed = urlparse(target)
        if not parsed.scheme and not parsed.netloc and not target.startswith("/login"):
            return target
    return url_for("dashboard.overview")


def _page(username: str = "", error: str | None = None, status: int = 200):
    """The login page; it offers SSO when an issuer is set."""
    sso_on = sso.SsoSettings.from_config(current_app.config) is not None
    signup = members.signup_mode(current_app.config) == members.OPEN
    page = render_template("login.html", username=username, error=error, sso=sso_on, signup=signup)
    return page, status


def _lock_message(scopes: list[str], now) -> str | None:
    """The refusal while one of the scopes is locked out, else None."""
    until = accounts.locked_until(db.session, scopes, now)
    if until is None:
        return None
    minutes = max(1, math.ceil((until - now).total_seconds() / 60))
    return f"Too many failed logins. Try again in {minutes} minute{'s' * (minutes > 1)}."


def _failed(scopes: list[str], now, target: str | None, **detail) -> None:
    """Count a failed login on the scopes, audit it, and slow the answer down as due."""
    delay = sessions.login_failed(admin(), scopes, _policy(), target, **detail)
    if delay:
        gateway().clock.sleep(delay)


def _signed_in(user, scopes: list[str], now, next_page: str | None, **detail):
    """Start a fresh session for the user and go where the login was asked from."""
    session.clear()  # a fresh session (and CSRF token) on login
    login_user(user)
    session.permanent = True
    sessions.logged_in(admin(), user, scopes, **detail)  # its actor: the user now signed in
    return redirect(_safe_next(next_page, user))


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The login form; repeated failures slow down, then lock the address or username."""
    # Only a submitted form is a login attempt: HEAD (Claude Code probes `HEAD /` on every
    # run and follows to here; monitors do `curl -I`) is answered like GET and counts nothing.
    if request.method != "POST":
        if current_user.is_authenticated:
            return redirect(_safe_next(request.args.get("next"), current_user))
        return _page()
    csrf.protect()
    username = (request.form.get("username") or "").strip()[:64]
    password = request.form.get("password") or ""
    now = gateway().clock.now()
    scopes = accounts.scopes(request.remote_addr or "unknown", username)
    locked = _lock_message(scopes, now)
    if locked:
        return _page(username, locked, 429)
    user = accounts.verify(db.session, username, password) if username and password else None
    if user is None:
        _failed(scopes, now, f"user:{username}" if username else None)
        return _page(username, "Wrong username or password.", 401)
    return _signed_in(user, scopes, now, request.args.get("next"))


@bp.get("/login/oidc")
def oidc_start():
    """Send the browser to the SSO provider, remembering what its answer must match."""
    settings = sso.SsoSettings.from_config(current_app.config)
    if settings is None:
        return _page(error="Single sign-on is not set up on this server.", status=404)
    callback = url_for("auth.oidc_callback", _external=True)
    try:
        url, pending = sso.start(settings, callback)
    except sso.SsoError as exc:
        return _page(error=str(exc), status=exc.status)
    session["oidc"] = pending.to_dict()
    session["oidc_next"] = request.args.get("next")
    return redirect(url)


@bp.get("/login/oidc/callback")
def oidc_callback():
    """The provider's answer: check it, then sign in whom the verified email names."""
    settings = sso.SsoSettings.from_config(current_app.config)
    if settings is None:
        return _page(error="Single sign-on is not set up on this server.", status=404)
    # Each sign-in answers once: a replayed callback finds nothing to match.
    pending, next_page = session.pop("oidc", None), session.pop("oidc_next", None)
    now = gateway().clock.now()
    address = request.remote_addr or "unknown"
    locked = _lock_message(accounts.scopes(address, "")[:1], now)
    if locked:
        return _page(error=locked, status=429)
    email = None
    try:
        email = sso.finish(settings, pending, request.args)
        user = sso.user_for(db.session, settings, email, now)
    except sso.SsoError as exc:
        db.session.rollback()
        scopes = accounts.scopes(address, email or "")[: 2 if email else 1]
        _failed(scopes, now, f"user:{email}" if email else None, method="sso")
        return _page(error=str(exc), status=exc.status)
    return _signed_in(user, accounts.scopes(address, email), now, next_page, method="sso")


@bp.post("/logout")
def logout():
    """End the session (a POST with the CSRF token, so no page can log you out)."""
    csrf.protect()
    if current_user.is_authenticated:
        sessions.logged_out(admin(), current_user)
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


# -- sign-up (members) -------------------------------------------------------------------


def _signup_page(error: str | None = None, status: int = 200, **values):
    """The sign-up form (in invite mode it carries the invite's token)."""
    mode = members.signup_mode(current_app.config)
    page = render_template("signup.html", error=error, mode=mode, **values)
    return page, status


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    """A new member signs up with email and password: anyone (KEYRELAY_SIGNUP=open), or
    whoever holds a one-time invite link (invite, the default); off: no sign-up."""
    mode = members.signup_mode(current_app.config)
    if mode == members.OFF:
        return _signup_page("Sign-up is off on this server. Ask an admin for an account.", 404)
    token = (request.values.get("invite") or "").strip()
    now = gateway().clock.now()
    if mode == members.INVITE:
        try:
            invite = members.find_invite(db.session, token, now)
        except InputError as exc:
            status = 403 if exc.status == 400 else exc.status
            return _signup_page(str(exc), status, invite=None)
        if request.method != "POST":
            return _signup_page(invite=token, email=invite.email or "")
    elif request.method != "POST":
        return _signup_page(invite="", email="")
    csrf.protect()
    email = (request.form.get("email") or "").strip()[:254]
    address = request.remote_addr or "unknown"
    locked = _lock_message(accounts.scopes(address, "")[:1], now)
    if locked:
        return _signup_page(locked, 429, invite=token, email=email)
    # Accounts made from one address are counted like failed logins: open sign-up cannot
    # be used to make accounts without end.
    made = [accounts.signup_scope(address)]
    until = accounts.locked_until(db.session, made, now)
    if until is not None:
        minutes = max(1, math.ceil((until - now).total_seconds() / 60))
        message = f"Too many sign-ups from your address. Try again in {minutes} minutes."
        return _signup_page(message, 429, invite=token, email=email)
    command = Admin(db.session, gateway(), "signup", address)
    via = "invite" if mode == members.INVITE else "signup"
    defaults = members.Defaults.from_config(current_app.config)
    try:
        member = member_commands.create(
            command, email, request.form.get("password") or "", defaults, via, token or None
        )
    except InputError as exc:
        db.session.rollback()
        status = 409 if exc.status == 409 else 422 if exc.status == 400 else exc.status
        return _signup_page(str(exc), status, invite=token, email=email, field=exc.field)
    accounts.record_failure(db.session, made, now, _policy())
    return _signed_in(member.user, accounts.scopes(address, email), now, None, method="signup")
