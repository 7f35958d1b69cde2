"""The admin dashboard's Members page: invite, suspend and resume, limits, balance
adjustments with a reason, delete; spend, balance, budget and status of each member.
Viewers read it; changes need an admin (the guard)."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from blueprints import formatting
from blueprints.web import admin, carried, carry, guard, no_cache, refuse, register_csrf_error
from extensions import db
from gateway import members as member_rules
from gateway.admin import members as member_commands
from gateway.admin.errors import InputError
from gateway.limits import budgets
from models import Member, Profile

bp = Blueprint("dashboard_members", __name__)
bp.before_request(guard)
bp.after_request(no_cache)
register_csrf_error(bp)
NEW_INVITE = "dashboard_new_invite"
LIMIT_FIELDS = ("budget", "budget_period", "rpm_limit", "tpm_limit", "max_keys", "profile")


def _page(invite_url: str | None = None, errors: dict | None = None, status: int = 200):
    rows = member_rules.listing(db.session)
    ids = [row.user_id for row in rows]
    page = render_template(
        "members.html",
        rows=rows,
        spend=member_rules.spend(db.session, ids),
        keys={row.user_id: member_rules.live_keys(db.session, row.user_id) for row in rows},
        invite_url=invite_url,
        signup=member_rules.signup_mode(current_app.config),
        durations=budgets.DURATIONS,
        profile_names=list(db.session.scalars(select(Profile.name).order_by(Profile.name))),
        errors=errors or {},
    )
    return page, status


def _member_or_404(member_id: int) -> Member:
    return db.session.get(Member, member_id) or abort(404)


@bp.get("/members")
def members():
    """Every member with their spend, balance, budget and status."""
    invite = carried(NEW_INVITE)  # the link of the invite just made, shown once
    return _page(invite_url=invite["url"] if invite else None)


@bp.post("/members/invites")
def invite():
    """A one-time invite link, shown once on the page that answers."""
    email = (request.form.get("email") or "").strip() or None
    try:
        config = current_app.config
        mode = member_rules.signup_mode(config)
        _row, token = member_commands.invite(admin(), config["INVITE_HOURS"], email, mode)
    except InputError as exc:
        db.session.rollback()
        errors = {"invite." + field: message for field, message in exc.by_field().items()}
        return _page(errors=errors, status=422)  # nothing made: a reload changes nothing
    # A redirect: reloading the page that shows the link makes no second invite.
    carry(NEW_INVITE, {"url": url_for("auth.signup", invite=token, _external=True)})
    return redirect(url_for("dashboard_members.members"))


@bp.post("/members/<int:member_id>/suspend")
def suspend(member_id: int):
    member = _member_or_404(member_id)
    member_commands.suspend(admin(), member)
    flash(f"Suspended {member.user.email}: their keys are refused from now on.", "ok")
    return redirect(url_for("dashboard_members.members"))


@bp.post("/members/<int:member_id>/resume")
def resume(member_id: int):
    member = _member_or_404(member_id)
    member_commands.resume(admin(), member)
    flash(f"Resumed {member.user.email}: their keys work again.", "ok")
    return redirect(url_for("dashboard_members.members"))


@bp.post("/members/<int:member_id>/limits")
def set_limits(member_id: int):
    """Budget, period, rate limits, key allowance and profile from the row's form (an
    empty budget or limit: none)."""
    member = _member_or_404(member_id)
    data = {f: (request.form.get(f) or "").strip() or None for f in LIMIT_FIELDS}
    if data["max_keys"] is None:
        data.pop("max_keys")
    if data["profile"] is None:
        data.pop("profile")
    try:
        member_commands.update_member(admin(), member, data)
    except InputError as exc:
        db.session.rollback()
        return refuse(f"{member.user.email}: {exc.sentence()}", 422)
    flash(f"Saved the limits of {member.user.email}.", "ok")
    return redirect(url_for("dashboard_members.members"))


@bp.post("/members/<int:member_id>/balance")
def adjust_balance(member_id: int):
    """Add or take away credits, with a reason (audited)."""
    member = _member_or_404(member_id)
    try:
        micros = member_commands.adjust_balance(
            admin(), member, request.form.get("amount"), request.form.get("reason")
        )
    except InputError as exc:
        db.session.rollback()
        return refuse(f"{member.user.email}: {exc.sentence()}", 422)
    change = formatting.usd(abs(micros))
    verb = "Added" if micros > 0 else "Took away"
    flash(f"{verb} {change} {'to' if micros > 0 else 'from'} {member.user.email}.", "ok")
    return redirect(url_for("dashboard_members.members"))


@bp.get("/members/<int:member_id>/delete")
def confirm_delete(member_id: int):
    return render_template("member_delete.html", member=_member_or_404(member_id))


@bp.post("/members/<int:member_id>/delete")
def delete(member_id: int):
    member = _member_or_404(member_id)
    email = member.user.email
    member_commands.delete(admin(), member)
    flash(f"Deleted member {email} and their keys.", "ok")
    return redirect(url_for("dashboard_members.members"))
