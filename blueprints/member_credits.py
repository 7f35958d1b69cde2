"""A member buys credits: `POST /analytics/credits` (form field `amount` in USD) sends
them to Paystack's payment page; Paystack sends them back to
`/analytics/credits/return?reference=…` (also `/callback`), where the payment is verified
and added to their balance. The rules are in gateway/ledger/member_credits.py."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, request, url_for
from flask_login import current_user

from blueprints.common import utcnow
from blueprints.web import guard_member, no_cache, register_csrf_error
from extensions import db
from gateway.ledger import member_credits
from gateway.ledger.paystack import Paystack

bp = Blueprint("member_credits", __name__)
bp.before_request(guard_member)
bp.after_request(no_cache)
register_csrf_error(bp)

NOT_SET_UP = "Buying credits is not set up on this server. Ask an admin to add credits."


def _paystack() -> Paystack | None:
    return Paystack.from_config(current_app.config)


def _to_dashboard(message: str, category: str = "error"):
    flash(message, category)
    return redirect(url_for("portal.analytics"))


@bp.post("/analytics/credits")
def buy():
    """Start a purchase of `amount` USD: off to Paystack's payment page."""
    if not current_user.is_member:
        return _to_dashboard("Only members buy credits here.")
    paystack = _paystack()
    if paystack is None:
        return _to_dashboard(NOT_SET_UP)
    per_unit = current_app.config["PAYSTACK_MICROS_PER_UNIT"]
    callback = url_for("member_credits.came_back", _external=True)
    try:
        units, _ = member_credits.units_of(request.form.get("amount"), per_unit)
        page = member_credits.start(paystack, current_user.id, current_user.email, units, callback)
    except member_credits.PurchaseError as exc:
        return _to_dashboard(str(exc))
    return redirect(page)


@bp.get("/analytics/credits/return")
@bp.get("/analytics/credits/callback")
def came_back():
    """Back from Paystack: verify the payment and add it to the balance (once)."""
    if not current_user.is_member:
        return _to_dashboard("Only members buy credits here.")
    paystack = _paystack()
    if paystack is None:
        return _to_dashboard(NOT_SET_UP)
    per_unit = current_app.config["PAYSTACK_MICROS_PER_UNIT"]
    reference = request.args.get("reference") or request.args.get("trxref")
    try:
        result = member_credits.finish(
            db.session, paystack, current_user.id, reference, per_unit, utcnow(),
            request.remote_addr,
        )  # fmt: skip
    except member_credits.PurchaseError as exc:
        db.session.rollback()
        return _to_dashboard(str(exc))
    return _to_dashboard(result.message, "success" if result.credited else "info")
