"""Logging in and out of the dashboard, with login throttling (F50)."""

from __future__ import annotations

import math
from datetime import timedelta
from urllib.parse import urlparse

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from blueprints.common import gateway
from blueprints.web import audit, no_cache, register_csrf_error
from extensions import csrf, db
from gateway import accounts

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


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no `//evil`, no scheme) may follow the login."""
    if target and target.startswith("/") and not target.startswith("//"):
        parsed = urlparse(target)
        if not parsed.scheme and not parsed.netloc and not target.startswith("/login"):
            return target
    return url_for("dashboard.overview")


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The login form; repeated failures slow down, then lock the address or username."""
    # Only a submitted form is a login attempt: HEAD (Claude Code probes `HEAD /` on every
    # run and follows to here; monitors do `curl -I`) is answered like GET and counts nothing.
    if request.method != "POST":
        if current_user.is_authenticated:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html", username="", error=None)
    csrf.protect()
    username = (request.form.get("username") or "").strip()[:64]
    password = request.form.get("password") or ""
    now = gateway().clock.now()
    scopes = accounts.scopes(request.remote_addr or "unknown", username)
    until = accounts.locked_until(db.session, scopes, now)
    if until is not None:
        minutes = max(1, math.ceil((until - now).total_seconds() / 60))
        error = f"Too many failed logins. Try again in {minutes} minute{'s' * (minutes > 1)}."
        return render_template("login.html", username=username, error=error), 429
    user = accounts.verify(db.session, username, password) if username and password else None
    if user is None:
        delay = accounts.record_failure(db.session, scopes, now, _policy())
        audit("login.failed", target=f"user:{username}" if username else None)
        db.session.commit()
        if delay:
            gateway().clock.sleep(delay)
        return render_template(
            "login.html", username=username, error="Wrong username or password."
        ), 401
    accounts.clear_failures(db.session, scopes)
    user.last_login_at = now
    session.clear()  # a fresh session (and CSRF token) on login
    login_user(user)
    session.permanent = True
    audit("login", target=f"user:{user.username}")
    db.session.commit()
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout():
    """End the session (a POST with the CSRF token, so no page can log you out)."""
    csrf.protect()
    if current_user.is_authenticated:
        audit("logout", target=f"user:{current_user.username}")
        db.session.commit()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
