"""The member's own pages: their dashboard at /analytics (keys, tokens, balance, budget,
usage, request log, snippets) and /api/keys/manage (their keys as JSON).

Only members come here; an admin or viewer is sent to the admin dashboard. Every form
answers with a redirect (post/redirect/get): a new key or token is carried to the next
page once, encrypted in the session, so reloading the page never creates a second one.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from blueprints import charts
from blueprints.common import error_response, gateway
from blueprints.formatting import usd as usd_text
from blueprints.web import carried, carry, guard_member, no_cache, refuse, register_csrf_error
from extensions import csrf, db
from gateway import portal
from gateway.admin.context import Admin
from gateway.admin.errors import InputError
from gateway.errors import GatewayError
from models import Member

bp = Blueprint("portal", __name__)
bp.before_request(guard_member)
bp.after_request(no_cache)
register_csrf_error(bp)

# /api/keys/manage: a session (with the CSRF header on changes) or a personal access token.
api = Blueprint("portal_api", __name__)
api.after_request(no_cache)

NEW_SECRET = "portal_new_secret"


def _member() -> Member | None:
    """The signed-in member's row (None for an admin or viewer)."""
    if not current_user.is_authenticated or not current_user.is_member:
        return None
    return db.session.get(Member, current_user.id)


def _command(member: Member) -> Admin:
    """The context of the member's own command: they are the actor, audited by name."""
    return Admin(db.session, gateway(), member.user.username, request.remote_addr)


def _carry(kind: str, name: str, secret: str) -> None:
    """Show this secret on the next page, once."""
    carry(NEW_SECRET, {"kind": kind, "name": name, "secret": secret})


def _carried() -> dict | None:
    """The secret carried from the last form, taken out of the session (shown once)."""
    return carried(NEW_SECRET)


def _to_page():
    return redirect(url_for("portal.analytics"))


@bp.get("/analytics")
def analytics():
    """The member's dashboard."""
    member = _member()
    if member is None:
        return redirect(url_for("dashboard.overview"))
    gateway().books.flush()  # the requests this process answered show at once
    now = gateway().clock.now()
    days, cost, tokens = portal.usage(db.session, member, now)
    keys = portal.keys(db.session, member)
    live = [view for view in keys if view.row.status(now) == "active"]
    return render_template(
        "portal.html",
        member=member,
        now=now,
        keys=keys,
        live_keys=len(live),
        hint=live[0].row.key_hint if live else None,
        tokens=portal.tokens(db.session, member),
        budget=portal.budget(db.session, member, now),
        requests=portal.request_log(db.session, member),
        cost_chart=charts.stacked(days, cost, "USD", usd_text),
        token_chart=charts.stacked(days, tokens, "tokens"),
        created=_carried(),
        origin=request.host_url.rstrip("/"),
        payments=bool(current_app.config.get("PAYSTACK_SECRET")),
    )


@bp.post("/analytics/keys")
def create_key():
    """Create a key; its secret shows once on the page the redirect leads to."""
    member = _member()
    if member is None:
        return refuse("Only members have keys here.", 403)
    try:
        row, key = portal.create_key(_command(member), member, request.form.get("name"))
    except InputError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return _to_page()
    _carry("key", row.name, key)
    return _to_page()


@bp.post("/analytics/keys/<int:key_id>/revoke")
def revoke_key(key_id: int):
    """Revoke one of the member's keys (someone else's is not found)."""
    member = _member()
    if member is None:
        return refuse("Only members have keys here.", 403)
    row = _found(lambda: portal.find_key(db.session, member, key_id))
    portal.revoke_key(_command(member), row)
    flash(f"Key “{row.name}” is revoked.", "ok")
    return _to_page()


@bp.post("/analytics/tokens")
def create_token():
    """Create a personal access token for /api/keys/manage; shown once after the redirect."""
    member = _member()
    if member is None:
        return refuse("Only members have tokens here.", 403)
    try:
        row, token = portal.create_token(_command(member), member, request.form.get("name"))
    except InputError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return _to_page()
    _carry("token", row.name, token)
    return _to_page()


@bp.post("/analytics/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int):
    """Revoke one of the member's personal access tokens."""
    member = _member()
    if member is None:
        return refuse("Only members have tokens here.", 403)
    row = _found(lambda: portal.find_token(db.session, member, token_id))
    portal.revoke_token(_command(member), row)
    flash(f"Token “{row.name}” is revoked.", "ok")
    return _to_page()


@bp.get("/analytics/requests/<request_id>")
def request_detail(request_id: str):
    """One of the member's requests (no prompts: KeyRelay does not keep them)."""
    member = _member()
    if member is None:
        return redirect(url_for("dashboard.request_detail", request_id=request_id))
    gateway().books.flush()
    row = _found(lambda: portal.find_request(db.session, member, request_id))
    return render_template("portal_request.html", row=row)


class _NotFound(Exception):
    pass


def _found(find):
    """What `find` finds; a 404 page when it is not the member's (never a 403: no hint
    that it exists)."""
    try:
        return find()
    except InputError as exc:
        raise _NotFound(str(exc)) from None


@bp.errorhandler(_NotFound)
def not_found(error: _NotFound):
    return refuse(str(error), 404)


# -- /api/keys/manage ------------------------------------------------------------------


def _api_member() -> Member:
    """The member calling: a personal access token, or their session (changes with the
    CSRF header the dashboard sends). GatewayError 401/403 otherwise."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        member = None
        if scheme.lower() == "bearer" and token.strip():
            member = portal.token_member(db.session, token.strip(), gateway().clock.now())
        if member is None:
            raise GatewayError(
                401, "Invalid or revoked personal access token.", code="invalid_token"
            )
        return member
    if not current_user.is_authenticated:
        raise GatewayError(
            401,
            "Sign in, or send a personal access token as 'Authorization: Bearer …'.",
            code="unauthorized",
        )
    member = _member()
    if member is None:
        raise GatewayError(403, "Only members have keys here.", code="not_a_member")
    if request.method != "GET":
        csrf.protect()
    return member


@api.errorhandler(GatewayError)
def api_error(error: GatewayError):
    return error_response(error)


@api.errorhandler(InputError)
def api_input_error(error: InputError):
    db.session.rollback()
    code = {403: "member_suspended", 409: "max_keys"}.get(error.status, "invalid_request")
    if error.status == 404:
        code = "not_found"
    return error_response(GatewayError(error.status, str(error), code=code, param=error.field))


@api.get("/api/keys/manage")
def list_keys():
    """The member's keys (hints only, never the keys)."""
    member = _api_member()
    gateway().books.flush()
    now = gateway().clock.now()
    return jsonify({"data": [view.to_dict(now) for view in portal.keys(db.session, member)]})


@api.post("/api/keys/manage")
def create_key_api():
    """A new key: the answer holds the key itself, this once."""
    member = _api_member()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InputError("body", 'Send a JSON object such as {"name": "laptop"}.')
    for field in body:
        if field != "name":
            raise InputError(field, f"Unknown field '{field}'; only 'name' is accepted.")
    row, key = portal.create_key(_command(member), member, body.get("name"))
    now = gateway().clock.now()
    return jsonify({**portal.KeyView(row, 0, None).to_dict(now), "key": key}), 201
