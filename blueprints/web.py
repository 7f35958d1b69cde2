"""What the dashboard's blueprints share: who is logged in, the guard, the command context,
errors."""

from __future__ import annotations

import json

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from htmx_flask.requests import HtmxHeaders

from blueprints.common import gateway
from extensions import csrf, db, login_manager
from gateway.admin.context import Admin
from gateway.keys.secrets import SecretBox, SecretUnreadable
from models import User

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MEMBERS_ELSEWHERE = "This page is for KeyRelay's admins. Your own dashboard is at /analytics."


def htmx() -> HtmxHeaders:
    """The htmx request headers (htmx-flask), read only where the dashboard needs them:
    installing its request class app-wide would cost every proxied call ~1.2 us."""
    return HtmxHeaders(request.headers)


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    """The logged-in user, unless removed or the password changed since login."""
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit() or not version.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or user.session_version != int(version):
        return None
    return user


@login_manager.unauthorized_handler
def unauthorized():
    """To the login page. An htmx request (a live refresh, a button) is told to send the
    whole page there (HX-Redirect), instead of getting a login form as its fragment."""
    target = url_for("auth.login", next=_next_url())
    if htmx():
        return Response("Your session has ended; log in again.", 401, {"HX-Redirect": target})
    return redirect(target)


def _next_url() -> str:
    """Where to come back to after login: the page, not the fragment that noticed."""
    if htmx():
        current = htmx().current_url or ""
        root = request.host_url.rstrip("/")
        return (
            current[len(root) :]
            if current.startswith(root + "/")
            else url_for("dashboard.overview")
        )
    return request.full_path.rstrip("?")


def guard() -> Response | None:
    """Every dashboard request: logged in, not a member; changes need an admin and a
    CSRF token."""
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if current_user.is_member:
        return refuse(MEMBERS_ELSEWHERE, 403)
    if request.method not in SAFE_METHODS:
        csrf.protect()
        if not current_user.is_admin:
            return refuse("Viewers can look but not change anything; ask an admin.", 403)
    return None


def guard_member() -> Response | None:
    """Every request to a member's page: logged in; changes need the CSRF token."""
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if request.method not in SAFE_METHODS:
        csrf.protect()
    return None


def refuse(message: str, status: int) -> Response:
    """A readable refusal: a flash on the page it came from, or a fragment for htmx."""
    if htmx():
        body = render_template("partials/flash.html", messages=[("error", message)])
        return Response(body, status, {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
    return Response(render_template("error.html", message=message, status=status), status)


def no_cache(response: Response) -> Response:
    """Dashboard pages show live data and key names: never cached."""
    response.headers["Cache-Control"] = "no-store"
    return response


def actor() -> str:
    """Who did it, for the audit log: the user, the master key (JSON API) or anonymous."""
    if current_user.is_authenticated:
        return current_user.username
    return "master key" if request.path.startswith("/api/") else "anonymous"


def admin(check=None) -> Admin:
    """The context of an admin command run by this request: who, from where (`check`:
    the front end's last check of the input, see Admin.check)."""
    return Admin(db.session, gateway(), actor(), request.remote_addr, check)


def register_csrf_error(bp: Blueprint) -> None:
    @bp.app_errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        db.session.rollback()
        current_app.logger.warning("CSRF refused %s %s: %s", request.method, request.path, error)
        message = (
            "This form was not sent from a KeyRelay page, or it expired. "
            "Reload the page and try again."
        )
        if request.path.startswith("/api/"):
            from blueprints.common import error_response
            from gateway.errors import GatewayError

            return error_response(GatewayError(403, message, code="csrf_failed"))
        return refuse(message, 400)


def flash_error(message: str) -> None:
    flash(message, "error")


def back(default: str = "dashboard.overview"):
    return redirect(request.referrer or url_for(default))


# -- post/redirect/get ------------------------------------------------------------------
# Every form answers with a redirect, so reloading the page it leads to repeats nothing.
# What the next page must show once (a new key's secret) is carried in the session,
# encrypted (the session cookie is only signed), and taken out when shown.


def _box() -> SecretBox:
    box = current_app.extensions.get("carry_box")
    if box is None:
        box = current_app.extensions["carry_box"] = SecretBox(current_app.config["SECRET_KEY"])
    return box


def carry(slot: str, data: dict) -> None:
    """Show `data` on the next page that reads `slot`, once."""
    session[slot] = _box().encrypt(json.dumps(data)).decode()


def carried(slot: str) -> dict | None:
    """What was carried in `slot`, taken out of the session (None: nothing, or a reload)."""
    sealed = session.pop(slot, None)
    if not sealed:
        return None
    try:
        return json.loads(_box().decrypt(sealed.encode()))
    except (SecretUnreadable, ValueError):
        return None
