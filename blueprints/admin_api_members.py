"""The admin API's members and invites: parse → command → render, on the admin API's
blueprint (the master key or an admin's session; the OpenAPI contract)."""

from __future__ import annotations

from flask import current_app, jsonify, url_for

from blueprints.admin_api import _json, bp, contract
from blueprints.web import admin
from extensions import db
from gateway import members
from gateway.admin import members as member_commands
from gateway.errors import GatewayError
from models import Member
from models.types import usd


def _member_or_404(member_id: int) -> Member:
    member = db.session.get(Member, member_id)
    if member is None:
        raise GatewayError(404, f"No member with id {member_id}.", code="member_not_found")
    return member


def _shown(member: Member) -> dict:
    """The member with their spend and live keys."""
    spent = members.spend(db.session, [member.user_id]).get(member.user_id, 0)
    return _with(member, spent, members.live_keys(db.session, member.user_id))


def _with(member: Member, spent: int, keys: int) -> dict:
    return {**member.to_dict(), "spend": usd(spent), "keys": keys}


@bp.get("/members")
def list_members():
    """Every member: balance, budget, limits, status, spend and keys."""
    rows = members.listing(db.session)
    spent = members.spend(db.session, [row.user_id for row in rows])
    return jsonify(
        {
            "data": [
                _with(row, spent.get(row.user_id, 0), members.live_keys(db.session, row.user_id))
                for row in rows
            ]
        }
    )


@bp.post("/members")
def create_member():
    """A member with the new-member defaults (KEYRELAY_MEMBER_*). Without a password they
    sign in with SSO only, until an admin sets one."""
    body = _json() if isinstance(_json(), dict) else {}
    defaults = members.Defaults.from_config(current_app.config)
    member = member_commands.create(
        admin(contract), body.get("email"), body.get("password"), defaults
    )
    return jsonify(_shown(member)), 201


@bp.get("/members/<int:member_id>")
def get_member(member_id: int):
    """One member."""
    return jsonify(_shown(_member_or_404(member_id)))


@bp.patch("/members/<int:member_id>")
def update_member(member_id: int):
    """Change budget, budget period, rate limits, key allowance or profile, or suspend
    (`"suspended": true`: their keys are refused at once) and resume."""
    member = _member_or_404(member_id)
    member_commands.update_member(admin(contract), member, _json())
    return jsonify(_shown(member))


@bp.post("/members/<int:member_id>/balance")
def adjust_balance(member_id: int):
    """Add (or with a negative amount take away) credits; a reason is required. The
    balance never goes below 0 (a 409)."""
    member = _member_or_404(member_id)
    body = _json() if isinstance(_json(), dict) else {}
    member_commands.adjust_balance(admin(contract), member, body.get("amount"), body.get("reason"))
    return jsonify(_shown(member))


@bp.delete("/members/<int:member_id>")
def delete_member(member_id: int):
    """Remove the member and their keys; their payments stay on record."""
    member_commands.delete(admin(), _member_or_404(member_id))
    return "", 204


@bp.post("/invites")
def create_invite():
    """A one-time sign-up link (KEYRELAY_INVITE_HOURS); with `email`, only for that
    person. The link is in the answer, once. With sign-up off: a 409."""
    body = _json() if isinstance(_json(), dict) else {}
    config = current_app.config
    row, token = member_commands.invite(
        admin(contract), config["INVITE_HOURS"], body.get("email"), members.signup_mode(config)
    )
    url = url_for("auth.signup", invite=token, _external=True)
    return jsonify({"url": url, "email": row.email, "expires_at": row.expires_at.isoformat()}), 201
