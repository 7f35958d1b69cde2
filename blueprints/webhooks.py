"""Payment webhooks (F35): `POST /api/webhooks/paystack`.

No login and no CSRF token: the caller is Paystack's server, and the signature over the
raw body (gateway/ledger/credits.py) is the authentication.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import IntegrityError

from blueprints.common import budgets_changed, utcnow
from extensions import db
from gateway.errors import GatewayError
from gateway.ledger import credits

bp = Blueprint("webhooks", __name__)


@bp.post("/paystack")
def paystack():
    """Verify, credit once per transaction reference, answer 200 to what is done."""
    secret = current_app.config["PAYSTACK_SECRET"]
    if not secret:
        raise GatewayError(
            503,
            "Payments are not configured: set KEYRELAY_PAYSTACK_SECRET.",
            type="server_error",
            code="payments_not_configured",
        )
    body = request.get_data(cache=False)
    if not credits.verify(secret, body, request.headers.get("x-paystack-signature")):
        raise GatewayError(
            401,
            "Invalid or missing x-paystack-signature.",
            type="authentication_error",
            code="invalid_signature",
        )
    micros_per_unit = current_app.config["PAYSTACK_MICROS_PER_UNIT"]
    try:
        outcome = credits.receive(db.session, body, micros_per_unit, utcnow(), request.remote_addr)
        db.session.commit()
    except credits.PayloadError as exc:
        db.session.rollback()
        raise GatewayError(400, str(exc), code="invalid_payload") from None
    except IntegrityError:  # the same reference, delivered twice at once: the other won
        db.session.rollback()
        outcome = credits.Outcome("duplicate", credits.parse(body).reference)
    if outcome.status == credits.CREDITED:
        budgets_changed()  # the proxy sees the new budget now (elsewhere: 1 s)
    return jsonify(outcome.body())
